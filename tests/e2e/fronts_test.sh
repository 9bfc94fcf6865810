#!/usr/bin/env bash
# The fronts beside loopserve.v1, end to end against the real binary: the
# Open Inference Protocol through Triton's client (tritonclient.grpc), HTTP
# with server-sent events, the pip-installed Python package, and both under
# TLS with tokens as the gRPC port; loopctl's progress bar and --json.
#
#   LOOPSERVE=build/app/loopserve LOOPCTL=build/client/loopctl \
#   SOURCE_DIR=. PYTHON=.venv/bin/python LOOPSERVE_PYTHON_STUBS=build/python \
#   bash tests/e2e/fronts_test.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
e2e=$(cd "$(dirname "$0")" && pwd)

metrics_port=$(free_port)
start_loopserve "$LOOPSERVE" "$work/server.err" --http_port="$(free_port)" \
  --metrics_port="$metrics_port" --max_iterations=2000000000000
[ -n "$http_port" ] || fail "no HTTP port in the ready line: $(cat "$work/server.err")"
export LOOPSERVE_GRPC=127.0.0.1:$port LOOPSERVE_HTTP=127.0.0.1:$http_port \
  LOOPSERVE_METRICS=127.0.0.1:$metrics_port

echo "== Open Inference Protocol"
"$PYTHON" "$e2e/oip_client_test.py" || fail "OIP client"

echo "== HTTP"
"$PYTHON" "$e2e/http_test.py" || fail "HTTP"
# curl -N shows the events as they come.
out=$(curl -sN -X POST "http://$LOOPSERVE_HTTP/v1/pipelines/seed-loop:run" \
  -d '{"inputs": {"num_steps": {"int64_value": "3"}, "x": {"int64_value": "0"}}}')
expect_contains "$out" "event: started" "curl -N"
expect_contains "$out" '"x":{"int64_value":"3"}' "curl -N"
expect_contains "$out" "event: end" "curl -N"

echo "== loopctl for people and for scripts"
out=$("$LOOPCTL" --server "127.0.0.1:$port" run seed-loop -i num_steps=3 -i x=0 --json)
"$PYTHON" - "$out" <<'PY' || fail "loopctl --json: $out"
import json, sys
events = [json.loads(line) for line in sys.argv[1].splitlines()]
assert [next(iter(e)) for e in events] == \
    ["started", "iteration", "iteration", "iteration", "result"], events
assert events[-1]["result"]["outputs"]["x"] == {"int64_value": "3"}, events
PY
out=$("$LOOPCTL" --server "127.0.0.1:$port" run seed-loop -i num_steps=-1 --json || true)
expect_contains "$out" '{"error":{' "loopctl --json, refused"
expect_contains "$out" '"code":"INVALID_ARGUMENT"' "loopctl --json, refused"
# On a terminal (script(1) gives it one): a bar with steps/s and ETA.
out=$(script -qc "$LOOPCTL --server 127.0.0.1:$port run digits-text -i num_inference_steps=200 --stream latents" /dev/null)
grep -qE '\] 200/200  [0-9.]+ steps/s  ETA [0-9.]+ s' <<<"$out" \
  || fail "no progress bar with steps/s and ETA on a terminal: $out"

echo "== pip install ./client/python from a copy of the folder, into a fresh virtual environment"
# Nothing of the repository beside it (no proto/), no protoc on PATH; its
# dependencies come from PyPI (or pip's cache).
cp -r "$SOURCE_DIR/client/python" "$work/loopserve-client"
"$PYTHON" -m venv "$work/venv"
env PATH=/usr/bin:/bin "$work/venv/bin/pip" install -q --disable-pip-version-check \
  "$work/loopserve-client[pil]" || fail "pip install ./client/python"
(cd "$work" && env -u LOOPSERVE_PYTHON_STUBS "$work/venv/bin/python" \
  "$e2e/remote_pipeline_test.py") || fail "RemotePipeline"

echo "== TLS and tokens: the same on every front"
bash "$SOURCE_DIR/tests/testing/make_test_certs.sh" "$work/certs"
printf 'alice s3cret-token\n' > "$work/tokens"
cp "$work/certs/server.pem" "$work/live.pem"
cp "$work/certs/server.key" "$work/live.key"
start_loopserve "$LOOPSERVE" "$work/secure.err" --http_port="$(free_port)" \
  --tls_cert_file="$work/live.pem" --tls_key_file="$work/live.key" \
  --auth_tokens_file="$work/tokens"
https="https://localhost:$http_port"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/certs/ca.pem" \
  "$https/v1/pipelines")
[ "$code" = 401 ] || fail "HTTPS without a token: $code, not 401"
out=$(curl -s --cacert "$work/certs/ca.pem" \
  -H "Authorization: Bearer s3cret-token" "$https/v1/pipelines")
expect_contains "$out" '"digits-text"' "HTTPS with a token"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/healthz" || true)
[ "$code" != 200 ] || fail "the TLS server's HTTP port answered plaintext"
(cd "$work" && "$work/venv/bin/python" - "$port" "$work/certs/ca.pem" <<'PY') \
  || fail "RemotePipeline over TLS with a token"
import sys, grpc, loopserve
port, ca = sys.argv[1], sys.argv[2]
pipe = loopserve.RemotePipeline(f"localhost:{port}", "seed-loop",
                                tls_ca_file=ca, token="s3cret-token")
assert pipe(num_steps=4, x=1)["x"] == 5
try:
    loopserve.RemotePipeline(f"localhost:{port}", "seed-loop",
                             tls_ca_file=ca)(num_steps=1, x=0)
    raise SystemExit("ran without a token")
except grpc.RpcError as error:
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
PY
# A renewed certificate (another CA's, here) is served without a restart.
cp "$work/certs/renewed.key" "$work/live.key"  # a moment with a mismatched pair
cp "$work/certs/renewed.pem" "$work/live.pem"
for _ in $(seq 50); do
  curl -s -o /dev/null --cacert "$work/certs/rogue-ca.pem" "$https/healthz" && break
  sleep 0.2
done
curl -sf -o /dev/null --cacert "$work/certs/rogue-ca.pem" "$https/healthz" \
  || fail "the HTTP port did not serve the renewed certificate"
! curl -s -o /dev/null --cacert "$work/certs/ca.pem" "$https/healthz" \
  || fail "the HTTP port still serves the old certificate"
echo "PASS"
