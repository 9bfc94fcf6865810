#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEED_CORPUS SECONDS: fuzzes for SECONDS from the
# checked-in seeds, keeping what it finds in a scratch corpus (the seeds
# stay as they are). Exits non-zero on a crash, a sanitizer report, a leak
# or a slow input; the input that did it is left in the working folder
# as crash-*, leak-* or timeout-*.
set -euo pipefail
fuzzer=$1 seeds=$2 seconds=$3
found=$(mktemp -d)
trap 'rm -rf "$found"' EXIT
"$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
  -print_final_stats=1 "$found" "$seeds"
