#!/usr/bin/env bash
# "I have a diffusers folder" -> it streams from loopserve, as a user runs
# it: tiny random-weight pipelines of each family (tests/testing/
# tiny_pipelines.py), exported with the pip-installed loopserve-export,
# served by the real binary, and run against diffusers' own pipelines
# (export_parity_test.py).
#
# Env: LOOPSERVE (binary), SOURCE_DIR, PYTHON.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

echo "== tiny pipelines, saved with save_pretrained"
"$PYTHON" "$SOURCE_DIR/tests/testing/tiny_pipelines.py" "$work/models" >/dev/null

echo "== pip install ./client/python[export]: the loopserve-export command"
# Its dependencies (torch, diffusers, transformers) are the environment's.
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps \
  --target "$work/pkg" "$SOURCE_DIR/client/python[export]" \
  || fail "pip install ./client/python[export]"
export PYTHONPATH="$work/pkg"
for family in sd15 sd2-v sdxl sdxl-refiner ddpm ddim; do
  "$work/pkg/bin/loopserve-export" "$work/models/$family" "$work/out/$family" \
    2>"$work/export-$family.err" >/dev/null \
    || fail "loopserve-export $family: $(cat "$work/export-$family.err")"
done
unset PYTHONPATH

# Another pipeline class is refused, naming it and the supported ones.
mkdir -p "$work/models/flux"
echo '{"_class_name": "FluxPipeline"}' >"$work/models/flux/model_index.json"
if PYTHONPATH="$SOURCE_DIR/client/python" "$PYTHON" -m loopserve.export \
    "$work/models/flux" "$work/out/flux" 2>"$work/flux.err"; then
  fail "a FluxPipeline folder was exported"
fi
expect_contains "$(cat "$work/flux.err")" \
  "_class_name 'FluxPipeline' is not supported; supported: StableDiffusionPipeline" \
  "unsupported family"

echo "== served by loopserve, against diffusers"
# One server per export (each is one configuration), its address in the
# variable the parity test reads; SD 1.x's batches up to 4 runs' rows.
for pair in SD15:sd15 SD2:sd2-v SDXL:sdxl REFINER:sdxl-refiner DDPM:ddpm \
            DDIM:ddim; do
  variable=${pair%%:*} family=${pair#*:}
  flags=()
  [ "$family" = sd15 ] && flags=(--max_batch_size 4)
  start_loopserve "$LOOPSERVE" "$work/$family.err" \
    --config "$work/out/$family/pipeline.pbtxt" "${flags[@]}"
  export "$variable=127.0.0.1:$port"
done
MODELS="$work/models" "$PYTHON" "$SOURCE_DIR/tests/e2e/export_parity_test.py" \
  || fail "exported pipelines against diffusers"
echo "PASS"
