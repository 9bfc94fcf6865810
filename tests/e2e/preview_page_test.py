"""The live preview page in a real browser: Debian's headless Chromium,
driven over the DevTools protocol (python3-websocket). It opens the page,
runs digits-text, and checks that step previews appear while the run is
still going, that the final image is drawn, and that Cancel cancels; it
saves a screenshot.

    LOOPSERVE_HTTP=127.0.0.1:PORT LOOPSERVE_METRICS=127.0.0.1:PORT \\
    SCREENSHOT=page.png python3 preview_page_test.py
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket
from server_metrics import runs_total, wait_for_runs  # noqa: E402

HTTP = os.environ["LOOPSERVE_HTTP"]


def fail(message):
    sys.exit("FAIL: " + message)


class Browser:
    """One headless Chromium with one page, over the DevTools protocol."""

    def __init__(self):
        self.profile = tempfile.mkdtemp()
        self.process = subprocess.Popen(
            [shutil.which("chromium"), "--headless=new", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1100,1000", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        for _ in range(300):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.1)
        else:
            fail("Chromium did not start its DevTools endpoint")
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/json"))
        page = [t for t in targets if t["type"] == "page"][0]
        self.socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps(
            {"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    fail(f"{method}: {message['error']}")
                return message["result"]

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            fail(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(expression):
                return
            time.sleep(0.05)
        fail(f"timed out waiting for {what}")

    def close(self):
        self.socket.close()
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)




def set_field(browser, name, value):
    browser.eval(f"document.querySelector('[name={name}]').value = "
                 f"{json.dumps(value)}")


def main():
    browser = Browser()
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate",
                     url=f"http://{HTTP}/?pipeline=digits-text")
        browser.wait_for("document.body && document.body.dataset.ready",
                         "the page to list the pipelines")
        if browser.eval("$('pipeline').value") != "digits-text":
            fail("the page did not choose digits-text")
        choices = browser.eval(
            "[...document.querySelector('[name=scheduler]').options]"
            ".map(o => o.value)")
        if "euler-a" not in choices:
            fail(f"the sampler choices are not the description's: {choices}")

        # A run long enough (1000 steps, ~2 s here) to watch it form.
        set_field(browser, "prompt", "a handwritten seven")
        set_field(browser, "num_inference_steps", "1000")
        set_field(browser, "seed", "7")
        browser.eval("$('run').click()")
        previews_while_running = 0
        progress_seen = ""
        deadline = time.time() + 60
        while time.time() < deadline:
            state, previews, progress = browser.eval(
                "[$('status').dataset.state, "
                "Number(document.body.dataset.previews || 0), "
                "$('progress-text').textContent]")
            if state == "running" and previews > 0:
                previews_while_running = max(previews_while_running, previews)
                progress_seen = progress
            if state in ("done", "error", "cancelled"):
                break
            time.sleep(0.05)
        status = browser.eval("$('status').textContent")
        if state != "done":
            fail(f"the run ended '{state}': {status}")
        if previews_while_running == 0:
            fail("no preview appeared while the run was going")
        if not re.search(r"step \d+ / 1000 · [\d.]+ steps/s", progress_seen):
            fail(f"no progress with steps/s: '{progress_seen}'")
        if browser.eval("$('final').dataset.drawn") != "true":
            fail("the final image was not drawn")
        # The digit: dark and light pixels both, not a blank canvas.
        spread = browser.eval(
            "(() => { const d = $('final').getContext('2d')"
            ".getImageData(0, 0, 256, 256).data; let lo = 255, hi = 0;"
            " for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]);"
            " hi = Math.max(hi, d[i]); } return hi - lo; })()")
        if spread < 100:
            fail(f"the final image is nearly flat (range {spread})")
        if "seed=7" not in browser.eval("$('reproduce').textContent") and \
                "iterations" not in browser.eval("$('stats').textContent"):
            fail("no stats after the run")
        screenshot = browser.call("Page.captureScreenshot", format="png")
        path = os.environ.get("SCREENSHOT", "preview_page.png")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(screenshot["data"]))
        print(f"screenshot: {path} ({previews_while_running} previews seen "
              f"mid-run; '{progress_seen}')")

        # Cancel: the server counts the run CANCELLED.
        before = runs_total("CANCELLED", "digits-text")
        set_field(browser, "num_inference_steps", "1000")
        browser.eval("$('run').click()")
        browser.wait_for("Number(document.body.dataset.previews) > 0",
                         "the second run's first preview")
        browser.eval("$('cancel').click()")
        browser.wait_for("$('status').dataset.state === 'cancelled'",
                         "the page to say cancelled")
        if wait_for_runs("CANCELLED", "digits-text", before + 1) <= before:
            fail("the server did not cancel the run")
        print("PASS")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
