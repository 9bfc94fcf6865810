"""What the end-to-end Python tests read off a server's /metrics
($LOOPSERVE_METRICS, host:port)."""

import os
import re
import time
import urllib.request


def runs_total(code, pipeline):
    """loopserve_runs_total{code, pipeline}: the runs that ended so."""
    text = urllib.request.urlopen(
        f"http://{os.environ['LOOPSERVE_METRICS']}/metrics").read().decode()
    match = re.search(r'loopserve_runs_total\{[^}]*code="%s"[^}]*pipeline='
                      r'"%s"[^}]*\} (\d+)' % (code, pipeline), text)
    return int(match.group(1)) if match else 0


def wait_for_runs(code, pipeline, count, timeout=10):
    """Waits until `count` runs of `pipeline` ended with `code`; the count."""
    deadline = time.time() + timeout
    while runs_total(code, pipeline) < count and time.time() < deadline:
        time.sleep(0.1)
    return runs_total(code, pipeline)
