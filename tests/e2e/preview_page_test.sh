#!/usr/bin/env bash
# The preview page in headless Chromium (tests/e2e/preview_page_test.py);
# the screenshot lands in $ARTIFACTS_DIR (build/test-artifacts).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
metrics_port=$(free_port)
start_loopserve "$LOOPSERVE" "$work/server.err" --http_port="$(free_port)" \
  --metrics_port="$metrics_port"
LOOPSERVE_HTTP=127.0.0.1:$http_port LOOPSERVE_METRICS=127.0.0.1:$metrics_port \
  SCREENSHOT="${ARTIFACTS_DIR:-$work}/preview_page.png" \
  "$PYTHON" "$SOURCE_DIR/tests/e2e/preview_page_test.py"
