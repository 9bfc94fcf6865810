#!/usr/bin/env bash
# A real Prometheus scrapes a real loopserve: Debian's prometheus package
# (installed here when missing), on loopback, scraping every second. The test
# runs pipelines (successes, a cancelled run, a refused request), then asks
# Prometheus' HTTP API whether the counters and histograms arrived with the
# values those runs must produce, and lints /metrics with promtool.
#
# Env: LOOPSERVE, LOOPCTL (the binaries), SOURCE_DIR.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }

if ! command -v prometheus > /dev/null || ! command -v promtool > /dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    fail "prometheus is not installed and this test is not root to install it (apt-get install prometheus)"
  fi
  echo "installing Debian's prometheus package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    prometheus > /dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

grpc_port=$(free_port)
metrics_port=$(free_port)
prom_port=$(free_port)

"$LOOPSERVE" --host=127.0.0.1 --port="$grpc_port" --metrics_port="$metrics_port" \
  --max_iterations=2000000000000 2> "$work/loopserve.log" &
pids+=($!)
for _ in $(seq 300); do
  grep -q "serving" "$work/loopserve.log" && break
  sleep 0.1
done
grep -q "serving" "$work/loopserve.log" || { cat "$work/loopserve.log"; fail "loopserve did not start"; }

cat > "$work/prometheus.yml" << EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: loopserve
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
promtool check config "$work/prometheus.yml" > /dev/null
prometheus --config.file="$work/prometheus.yml" \
  --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" \
  --log.level=warn 2> "$work/prometheus.log" &
pids+=($!)

# The runs.
ctl() { "$LOOPCTL" --server "127.0.0.1:$grpc_port" "$@"; }
for x in 1 2 3; do ctl run seed-loop -i num_steps=4 -i x="$x" > /dev/null; done
ctl run digits-ddim -i seed=3 -i num_inference_steps=5 > /dev/null
if ctl run seed-loop -i num_steps=-1 -i x=0 2> "$work/refused.txt"; then
  fail "a negative num_steps was accepted"
fi
grep -q INVALID_ARGUMENT "$work/refused.txt" || fail "refusal: $(cat "$work/refused.txt")"
# Cancelled: the client goes away while the run runs. (SIGTERM: a
# background job ignores SIGINT.)
"$LOOPCTL" --server "127.0.0.1:$grpc_port" run seed-loop \
  -i num_steps=1000000000000 -i x=0 --every 1000000 > "$work/long.txt" &
long=$!
for _ in $(seq 100); do [ -s "$work/long.txt" ] && break; sleep 0.1; done
kill -TERM "$long"
wait "$long" 2> /dev/null || true

# Ask Prometheus until it has scraped what the runs did.
query() {
  "$PYTHON" - "$prom_port" "$1" << 'EOF'
import json, sys, urllib.error, urllib.parse, urllib.request
port, promql = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
try:
    body = json.load(urllib.request.urlopen(url, timeout=5))
except urllib.error.HTTPError:
    print("error"); sys.exit()  # Prometheus refuses the query (400)
except Exception:
    print("unreachable"); sys.exit()
if body.get("status") != "success":
    print("error"); sys.exit()
result = body.get("data", {}).get("result", [])
print(" ".join(r["value"][1] for r in result) if result else "none")
EOF
}
expect() {  # PROMQL VALUE: waits up to 30 s for Prometheus to answer VALUE
  local got
  for _ in $(seq 60); do
    got=$(query "$1")
    [ "$got" = "$2" ] && { echo "ok   $1 = $got"; return; }
    sleep 0.5
  done
  fail "$1: Prometheus says '$got', expected '$2'"
}

expect 'up{job="loopserve"}' 1
expect 'loopserve_runs_total{pipeline="seed-loop",code="OK"}' 3
expect 'loopserve_runs_total{pipeline="digits-ddim",code="OK"}' 1
expect 'loopserve_runs_total{pipeline="seed-loop",code="INVALID_ARGUMENT"}' 1
expect 'loopserve_runs_total{pipeline="seed-loop",code="CANCELLED"}' 1
expect 'loopserve_rejected_runs_total{reason="invalid_argument"}' 1
expect 'loopserve_run_duration_seconds_count{pipeline="digits-ddim"}' 1
expect 'loopserve_time_to_first_iteration_seconds_count{pipeline="digits-ddim"}' 1
expect 'loopserve_iteration_duration_seconds_count{pipeline="digits-ddim"}' 5
expect 'loopserve_iterations_streamed_total{pipeline="digits-ddim"}' 5
expect 'loopserve_block_duration_seconds_count{pipeline="digits-ddim",block="digits-ddim/denoise/denoiser"}' 5
expect 'loopserve_block_duration_seconds_count{pipeline="digits-ddim",block="digits-ddim/set_timesteps"}' 1
expect 'loopserve_block_duration_seconds_bucket{pipeline="digits-ddim",block="digits-ddim/denoise/denoiser",le="+Inf"}' 5
expect 'loopserve_active_runs{pipeline="seed-loop"}' 0
expect 'loopserve_queued_runs' 0
expect 'count(loopserve_build_info{device="cpu"})' 1
# The histograms are usable: a median iteration time between 10 us and 10 s.
expect 'histogram_quantile(0.5, sum by (le) (loopserve_iteration_duration_seconds_bucket{pipeline="digits-ddim"})) > bool 1e-5' 1
expect 'histogram_quantile(0.5, sum by (le) (loopserve_iteration_duration_seconds_bucket{pipeline="digits-ddim"})) < bool 10' 1
expect 'process_resident_memory_bytes{job="loopserve"} > bool 1e6' 1
expect 'time() - process_start_time_seconds{job="loopserve"} < bool 600' 1
# The alert rules and the prometheus-adapter rule shipped with the manifests
# are valid, and Prometheus evaluates each of their queries against this
# server's series.
"$PYTHON" - "$SOURCE_DIR" "$work" << 'EOF'
import sys, yaml
source, work = sys.argv[1], sys.argv[2]
rule = yaml.safe_load(open(f"{source}/deploy/k8s/base/prometheus-rule.yaml"))
open(f"{work}/rules.yml", "w").write(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
adapter = yaml.safe_load(open(f"{source}/deploy/k8s/prometheus-adapter/rules.yaml"))
for r in adapter["rules"]["custom"]:
    exprs.append(r["metricsQuery"].replace("<<.LabelMatchers>>", 'job="loopserve"')
                                  .replace("<<.GroupBy>>", "job"))
open(f"{work}/exprs.txt", "w").write("\n".join(" ".join(e.split()) for e in exprs) + "\n")
EOF
promtool check rules "$work/rules.yml"
while read -r expr; do
  got=$(query "$expr")
  [ "$got" != unreachable ] && [ "$got" != error ] || fail "Prometheus cannot evaluate: $expr"
  echo "ok   evaluates: ${expr:0:90}"
done < "$work/exprs.txt"
# The adapter's metric: runs executing plus queued, 0 now.
expect 'sum by (job) (loopserve_queued_runs{job="loopserve"}) + sum by (job) (loopserve_active_runs{job="loopserve"})' 0

"$PYTHON" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt" || fail "promtool check metrics"
echo "promtool check metrics: OK ($(grep -c '^loopserve_' "$work/metrics.txt") loopserve_ samples)"
echo PASS
