#!/usr/bin/env bash
# Resuming on another replica, end to end: two loopserve processes sharing a
# --checkpoint_key_file; a run's checkpoints saved by loopctl on one, that
# one killed, the run continued on the other, bit for bit; a fork; the
# refusals; the Python client's resume().
#
# Env: LOOPSERVE, LOOPCTL (binaries), SOURCE_DIR, LOOPSERVE_PYTHON_STUBS.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

"$PYTHON" -c "import secrets; print(secrets.token_hex(32))" > "$work/key"
start_loopserve "$LOOPSERVE" "$work/a.err" --checkpoint_key_file "$work/key"
pid_a=$server_pid port_a=$port
start_loopserve "$LOOPSERVE" "$work/b.err" --checkpoint_key_file "$work/key"
port_b=$port
echo "replicas on ports $port_a and $port_b"

# A stochastic sampler: the continuation must replay the random stream too.
run_inputs=(-i prompt=seven -i scheduler=euler-a -i num_inference_steps=10 -i seed=5)
"$LOOPCTL" --server "127.0.0.1:$port_b" run digits-text "${run_inputs[@]}" \
  --save-dir "$work/whole" > /dev/null
out=$("$LOOPCTL" --server "127.0.0.1:$port_a" run digits-text \
  "${run_inputs[@]}" --checkpoint-dir "$work/ckpt")
expect_contains "$out" "result" "run with checkpoints"
[ "$(ls "$work/ckpt" | wc -l)" = 10 ] || fail "expected 10 checkpoints: $(ls "$work/ckpt")"

# Replica A is lost; B continues A's run after its 5th iteration.
kill -9 "$pid_a"
out=$("$LOOPCTL" --server "127.0.0.1:$port_b" resume "$work/ckpt/denoise_4.ckpt" \
  --save-dir "$work/resumed")
expect_contains "$out" "resumed digits-text/denoise at iteration 6" "resume"
expect_contains "$out" "iteration 6/10" "resume"
if grep -q "iteration 5/10" <<<"$out"; then fail "resume re-ran iteration 5"; fi
cmp "$work/whole/image.npy" "$work/resumed/image.npy" ||
  fail "the resumed run's image differs from the uninterrupted run's"
cmp "$work/whole/latents.npy" "$work/resumed/latents.npy" ||
  fail "the resumed run's latents differ from the uninterrupted run's"

# A fork: another guidance scale from step 5 on.
"$LOOPCTL" --server "127.0.0.1:$port_b" resume "$work/ckpt/denoise_4.ckpt" \
  -i guidance_scale=6 --save-dir "$work/fork" > /dev/null
if cmp -s "$work/whole/latents.npy" "$work/fork/latents.npy"; then
  fail "a fork with another guidance scale changed nothing"
fi

# Refused: what was consumed before the loop, a tampered checkpoint.
if out=$("$LOOPCTL" --server "127.0.0.1:$port_b" resume \
      "$work/ckpt/denoise_4.ckpt" -i seed=6 2>&1); then
  fail "a changed seed was accepted"
fi
expect_contains "$out" "INVALID_ARGUMENT" "changed seed"
expect_contains "$out" "resuming changes 'seed'" "changed seed"
"$PYTHON" - "$work/ckpt/denoise_4.ckpt" "$work/tampered.ckpt" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[len(data) // 2] ^= 1
open(sys.argv[2], "wb").write(data)
PY
if out=$("$LOOPCTL" --server "127.0.0.1:$port_b" resume "$work/tampered.ckpt" 2>&1); then
  fail "a tampered checkpoint was accepted"
fi
expect_contains "$out" "INVALID_ARGUMENT: resume_from" "tampered checkpoint"

# The Python client: checkpoints from run(), the rest from resume().
PYTHONPATH="$SOURCE_DIR/client/python" "$PYTHON" - "127.0.0.1:$port_b" <<'PY'
import sys
import numpy as np
from loopserve_client import LoopClient, from_value

client = LoopClient(sys.argv[1])
inputs = {"prompt": "three", "scheduler": "dpmpp-2m-sde-karras",
          "num_inference_steps": 8, "seed": 11}
whole, checkpoints = None, []
for kind, event in client.run("digits-text", inputs, checkpoints=True):
    if kind == "iteration":
        checkpoints.append(event.checkpoint)
    elif kind == "result":
        whole = from_value(event.outputs["latents"])
indices = []
for kind, event in client.resume(checkpoints[2]):
    if kind == "iteration":
        indices.append(event.index)
    elif kind == "result":
        assert np.array_equal(from_value(event.outputs["latents"]), whole)
assert indices == [3, 4, 5, 6, 7], indices
print("python resume: bit for bit")
PY
echo "PASS"
