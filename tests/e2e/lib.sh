# Helpers the end-to-end scripts share. Source it after `set -euo pipefail`:
# it makes a scratch folder, $work, and removes it, stopping the servers
# start_loopserve started, when the script exits.

work=$(mktemp -d)
server_pid=""
server_pids=()
cleanup() {
  for pid in "${server_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

expect_contains() {  # haystack needle what
  grep -qF -- "$2" <<<"$1" || fail "$3: expected '$2' in:"$'\n'"$1"
}

# free_port: prints a port nothing listens on now.
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_loopserve BINARY STDERR_FILE ARGS...: starts BINARY in the
# background on 127.0.0.1 (a free port, no metrics or HTTP port unless ARGS
# say), waits for its ready line, and sets server_pid, port and http_port
# (empty without one; call it again for another server).
start_loopserve() {
  local binary=$1 err=$2
  shift 2
  "$binary" --host=127.0.0.1 --port=0 --metrics_port=0 --http_port=0 "$@" \
    2>"$err" &
  server_pid=$!
  server_pids+=("$server_pid")
  for _ in $(seq 300); do
    grep -q "serving" "$err" && break
    kill -0 "$server_pid" 2>/dev/null || fail "loopserve exited: $(cat "$err")"
    sleep 0.1
  done
  port=$(grep "serving" "$err" | grep -o 'on 127.0.0.1:[0-9]*' | cut -d: -f2)
  [ -n "$port" ] || fail "no ready line: $(cat "$err")"
  http_port=$(grep "serving" "$err" | grep -o 'http on :[0-9]*' | cut -d: -f2 || true)
}
