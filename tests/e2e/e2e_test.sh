#!/usr/bin/env bash
# End to end, as a new user would run it: the real loopserve binary, loopctl
# and the Python client, over loopback.
#
# Env: LOOPSERVE, LOOPCTL (binaries), SOURCE_DIR, LOOPSERVE_PYTHON_STUBS.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# Flags take --flag value as well as --flag=value.
start_loopserve "$LOOPSERVE" "$work/server.err" --shutdown_grace_s 5
export LOOPSERVE_SERVER="127.0.0.1:$port"
echo "loopserve ready on port $port"

out=$("$LOOPCTL" health)
expect_contains "$out" "SERVING" "health"
out=$("$LOOPCTL" health loopserve.v1.LoopPipelineService)
expect_contains "$out" "SERVING" "service health"

out=$("$LOOPCTL" list)
expect_contains "$out" "seed-loop" "list"
expect_contains "$out" "seed-loop-2" "list"

out=$("$LOOPCTL" describe seed-loop)
expect_contains "$out" "num_steps  int" "describe"
expect_contains "$out" "iteration outputs:" "describe"
out=$("$LOOPCTL" describe seed-loop-2 --json)
expect_contains "$out" '"kind": "loop"' "describe --json"

out=$("$LOOPCTL" run seed-loop -i num_steps=5 -i x=0)
for i in 1 2 3 4 5; do
  expect_contains "$out" "iteration $i/5 [seed-loop]  x = $i" "run"
done
expect_contains "$out" "result  x = 5" "run"
expect_contains "$out" "sent=5 dropped=0" "run"

# A tensor input from NumPy, streamed tensors and the result saved as .npy.
"$PYTHON" -c "import numpy as np; np.save('$work/x.npy', np.arange(24, dtype=np.float32).reshape(2, 3, 4))"
out=$("$LOOPCTL" run seed-loop-2 -i num_steps=4 -i "x=@$work/x.npy" \
  --save-dir "$work/saved" --every 2)
expect_contains "$out" "result  x = FP32[2,3,4] min=8 max=31" "tensor run"
"$PYTHON" - "$work" <<'PY' || fail "saved .npy files"
import sys, numpy as np
work = sys.argv[1]
x0 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
assert np.array_equal(np.load(f"{work}/saved/x_1.npy"), x0 + 4)
assert np.array_equal(np.load(f"{work}/saved/x_3.npy"), x0 + 8)
assert np.array_equal(np.load(f"{work}/saved/x.npy"), x0 + 8)
PY

# Bad input: a clear error and a non-zero exit; the server serves on.
if out=$("$LOOPCTL" run seed-loop -i num_steps=five -i x=0 2>&1); then
  fail "a string num_steps was accepted"
fi
expect_contains "$out" "INVALID_ARGUMENT: pipeline 'seed-loop': input 'num_steps': expects int, got string" "bad input"
if out=$("$LOOPCTL" run seed-loop -i num_steps=3 -i y=0 2>&1); then
  fail "an unknown input was accepted"
fi
expect_contains "$out" "input 'y': unknown input" "unknown input"
# Each refused run wrote one line to the server's log.
for _ in $(seq 50); do
  [ "$(grep -c "run refused" "$work/server.err")" -ge 2 ] && break
  sleep 0.1
done
log=$(cat "$work/server.err")
expect_contains "$log" "run refused run_id=- request_id=\"\" pipeline=seed-loop code=INVALID_ARGUMENT message=\"pipeline 'seed-loop': input 'num_steps': expects int, got string\"" "log line"
[ "$(grep -c "run refused" "$work/server.err")" -eq 2 ] || fail "expected two run lines in: $log"

# One pipeline, every sampler: describe lists them; a run without a seed
# prints the seed the server drew, and sending it back reproduces the run.
out=$("$LOOPCTL" describe digits-ddim)
expect_contains "$out" "(one of: digits-ddim, ddim, euler, euler-karras, euler-a, dpmpp-2m, dpmpp-2m-karras, dpmpp-2m-sde-karras, dpmpp-3m, unipc, unipc-3)" "describe choices"
out=$("$LOOPCTL" run digits-ddim -i scheduler=dpmpp-2m-sde-karras -i num_inference_steps=6)
seed=$(printf '%s\n' "$out" | sed -n 's/^resolved .*seed = \([0-9]*\).*/\1/p')
[ -n "$seed" ] || fail "no resolved seed in: $out"
first=$(printf '%s\n' "$out" | grep '^result')
again=$("$LOOPCTL" run digits-ddim -i scheduler=dpmpp-2m-sde-karras -i num_inference_steps=6 -i "seed=$seed" | grep '^result')
[ "$first" = "$again" ] || fail "seed $seed did not reproduce: '$first' vs '$again'"
if out=$("$LOOPCTL" run digits-ddim -i scheduler=dpmpp-9m 2>&1); then
  fail "an unknown sampler was accepted"
fi
expect_contains "$out" "input 'scheduler': must be one of: digits-ddim, ddim, euler," "unknown sampler"

# Every flag with its default, and --flag=value for both programs.
out=$("$LOOPSERVE" --help || true)  # absl exits 1 after --help
expect_contains "$out" "--port (Port to listen on; 0 picks a free one); default: 50051;" "loopserve --help"
expect_contains "$out" "--plugin (A plugin" "loopserve --help"
expect_contains "$out" "--log_level" "loopserve --help"
out=$("$LOOPCTL" --help)
expect_contains "$out" "default: pick_first" "loopctl --help"
out=$("$LOOPCTL" --server="$LOOPSERVE_SERVER" run seed-loop --input=num_steps=4 \
  --input x=1 --every=2 --request-id=flags)
expect_contains "$out" "result  x = 5" "loopctl --flag=value"
expect_contains "$out" "sent=2 dropped=0" "loopctl --every=2"

# The Python client's example.
out=$("$PYTHON" "$SOURCE_DIR/client/python/stream_seed_loop.py" \
  --server "$LOOPSERVE_SERVER" --num_steps 5)
for i in 1 2 3 4 5; do
  expect_contains "$out" "iteration $i/5: x = $i" "python example"
done
expect_contains "$out" "result: x = 5" "python example"

# The Python client with tensors, LATEST and every.
"$PYTHON" - <<PY || fail "python client"
import sys
sys.path.insert(0, "$SOURCE_DIR/client/python")
import numpy as np
from loopserve_client import LoopClient, from_value
client = LoopClient("$LOOPSERVE_SERVER")
assert [p.name for p in client.list()] == [
    "seed-loop", "seed-loop-2", "gmm-ddim", "gmm-euler", "gmm-flow",
    "digits-ddim", "digits-text", "digits-img2img"]
x0 = np.ones((1, 4, 64, 64), np.float32)
seen = []
result = None
for kind, event in client.run("seed-loop", {"num_steps": 20, "x": x0},
                              every=5, latest=True):
    if kind == "iteration":
        seen.append(event.index)
        assert np.array_equal(from_value(event.values["x"]), x0 + event.index + 1)
    elif kind == "result":
        result = event
assert seen and seen[-1] == 19, seen
assert np.array_equal(from_value(result.outputs["x"]), x0 + 20)
PY

# Server reflection lists the services.
"$PYTHON" - <<PY || fail "reflection"
import sys
sys.path.insert(0, "$LOOPSERVE_PYTHON_STUBS")
import grpc
from loopserve.testing import reflection_pb2 as r, reflection_pb2_grpc as rg
# The channel is closed before the interpreter exits: that cancels the
# stream left open here while grpc's threads still run (an open call
# finalised at exit can wait forever for a lock a stopped thread held).
with grpc.insecure_channel("$LOOPSERVE_SERVER") as channel:
    stub = rg.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([r.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in next(responses).list_services_response.service}
assert {"loopserve.v1.LoopPipelineService", "grpc.health.v1.Health"} <= names, names
PY

# A denoising run of the shipped digits model: previews each step, the
# decoded image at the end, all saved as PNG.
# --save-dir asks for the pipeline's previews by itself.
out=$("$LOOPCTL" run digits-ddim -i seed=7 -i num_inference_steps=10 \
  --save-dir "$work/digits")
expect_contains "$out" "image = UINT8[1,64,64,3]" "digits run"
for f in preview_0.png preview_9.png image.png latents.npy; do
  [ -s "$work/digits/$f" ] || fail "digits run saved no $f"
done
"$PYTHON" - "$work/digits" <<'PY' || fail "saved PNGs"
import struct, sys
for name in ("preview_9.png", "image.png"):
    data = open(f"{sys.argv[1]}/{name}", "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", name
    assert struct.unpack(">II", data[16:24]) == (64, 64), name
PY

# Text to image: a prompted seven, as the shipped classifier sees it; then
# image to image from it, towards a three.
out=$("$LOOPCTL" run digits-text -i "prompt=a handwritten seven" -i seed=7 \
  -i num_inference_steps=25 --save-dir "$work/seven")
expect_contains "$out" "image = UINT8[1,64,64,3]" "digits-text run"
out=$("$LOOPCTL" run digits-img2img -i "image_latents=@$work/seven/latents.npy" \
  -i strength=0.9 -i prompt=three -i seed=7 -i num_inference_steps=25 \
  --save-dir "$work/three")
expect_contains "$out" "resolved " "digits-img2img run"
"$PYTHON" - "$work" "$SOURCE_DIR" <<'PY' || fail "prompted digits"
import sys
import numpy as np
import torch
classifier = torch.jit.load(f"{sys.argv[2]}/deploy/models/digits/classifier.pt")
for folder, digit in (("seven", 7), ("three", 3)):
    x = torch.from_numpy(np.load(f"{sys.argv[1]}/{folder}/latents.npy").copy())
    label = classifier(x.clamp(-1, 1)).argmax(1).item()
    assert label == digit, (folder, label)
PY

# diffusers' own DDIMPipeline, driving the shipped model: the same images
# as digits-ddim, bit for bit, prompted or not.
LOOPSERVE_GRPC=$LOOPSERVE_SERVER "$PYTHON" "$SOURCE_DIR/tests/e2e/diffusers_pipeline_test.py" \
  || fail "digits-ddim against diffusers' DDIMPipeline"

# The Python client: a denoising run with previews.
"$PYTHON" - <<PY || fail "python denoising"
import sys
sys.path.insert(0, "$SOURCE_DIR/client/python")
import numpy as np
from loopserve_client import LoopClient, from_value
client = LoopClient("$LOOPSERVE_SERVER")
previews = 0
for kind, event in client.run("gmm-euler", {"seed": 3, "num_inference_steps": 6},
                              stream=["latents"], preview=True):
    if kind == "iteration":
        assert event.preview_png[:8] == b"\x89PNG\r\n\x1a\n"
        assert from_value(event.values["latents"]).shape == (1, 4, 64, 64)
        previews += 1
    elif kind == "result":
        assert from_value(event.outputs["preview"]).dtype == np.uint8
assert previews == 6, previews
# A list of prompts is a batch, one sample per prompt.
for kind, event in client.run("digits-text", {"prompt": ["one", "two"], "seed": 1,
                                              "num_inference_steps": 5}):
    if kind == "result":
        assert from_value(event.outputs["latents"]).shape == (2, 1, 8, 8)
PY

# --check_config validates a configuration file and exits.
cat > "$work/good.pbtxt" <<'CONFIG'
components { name: "euler" type: "euler_scheduler" }
components {
  name: "gmm"
  type: "gaussian_mixture_denoiser"
  params { key: "weights" value { list_value { values { double_value: 1 } } } }
  params { key: "means" value { list_value { values { double_value: 0 } } } }
  params { key: "stds" value { list_value { values { double_value: 1 } } } }
}
pipelines {
  name: "mine"
  components { key: "scheduler" value: "euler" }
  components { key: "denoiser" value: "gmm" }
  blocks {
    type: "Sequential"
    blocks { name: "set_timesteps" type: "SetTimesteps" }
    blocks { name: "prepare_latents" type: "PrepareLatents" }
    blocks {
      name: "denoise"
      type: "DenoiseLoop"
      blocks { name: "before_denoiser" type: "ScaleModelInput" }
      blocks { name: "denoiser" type: "PredictNoise" }
      blocks { name: "after_denoiser" type: "SchedulerStep" }
    }
  }
}
CONFIG
out=$("$LOOPSERVE" --check_config="$work/good.pbtxt") || fail "good config refused"
expect_contains "$out" "good.pbtxt: OK, 1 pipelines: mine" "check_config"
sed 's/"SchedulerStep"/"SchedulerStop"/' "$work/good.pbtxt" > "$work/bad.pbtxt"
if out=$("$LOOPSERVE" --check_config="$work/bad.pbtxt" 2>&1); then
  fail "a bad config passed --check_config"
fi
expect_contains "$out" "bad.pbtxt:22:7: pipeline 'mine', block 'denoise/after_denoiser': unknown block type 'SchedulerStop'" "check_config error"
# A role bound to a component of the wrong kind fails where it is bound.
sed 's/key: "scheduler" value: "euler"/key: "scheduler" value: "gmm"/' "$work/good.pbtxt" > "$work/role.pbtxt"
if out=$("$LOOPSERVE" --check_config="$work/role.pbtxt" 2>&1); then
  fail "a wrongly typed role passed --check_config"
fi
expect_contains "$out" "role.pbtxt:11:3: pipeline 'mine', role 'scheduler': block 'mine/set_timesteps' (SetTimesteps) expects component 'scheduler' to be a Scheduler" "check_config role"
# A model folder's scheduler_config.json as users have it (SD 1.5's, a
# PNDM's): another class's keys are noted, a typo is refused with a
# did-you-mean.
cat > "$work/scheduler_config.json" <<'JSON'
{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
 "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
 "num_train_timesteps": 1000, "set_alpha_to_one": false,
 "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}
JSON
sed 's|components { name: "euler" type: "euler_scheduler" }|components { name: "sd-dpm" type: "dpm_solver_multistep_scheduler" params { key: "config_file" value { string_value: "scheduler_config.json" } } }|; s/key: "scheduler" value: "euler"/key: "scheduler" value: "sd-dpm"/' \
  "$work/good.pbtxt" > "$work/sampler.pbtxt"
out=$("$LOOPSERVE" --check_config="$work/sampler.pbtxt")
expect_contains "$out" "note: $work/sampler.pbtxt:1:1: component 'sd-dpm' (dpm_solver_multistep_scheduler): config_file keys that DPMSolverMultistepScheduler does not use: set_alpha_to_one, skip_prk_steps" "check_config notes"
sed -i 's/"skip_prk_steps"/"skip_prk_step"/' "$work/scheduler_config.json"
if out=$("$LOOPSERVE" --check_config="$work/sampler.pbtxt" 2>&1); then
  fail "a misspelt key was accepted"
fi
expect_contains "$out" "has key 'skip_prk_step', which no diffusers scheduler knows; did you mean 'skip_prk_steps'?" "check_config typo"

# SIGTERM: drains and exits 0.
kill -TERM "$server_pid"
wait "$server_pid" || fail "loopserve exited with $? after SIGTERM"
server_pid=""
expect_contains "$(cat "$work/server.err")" "loopserve: stopped" "shutdown"

# Security: TLS, a token file and a plaintext health port, as
# docs/operations.md sets them up. loopctl and the Python client speak
# TLS and send the token; a plaintext or token-less client is refused
# while health answers.
bash "$SOURCE_DIR/tests/testing/make_test_certs.sh" "$work/certs"
printf '# who may run\nalice %s\n' "e2e-token-a" > "$work/tokens"
echo e2e-token-a > "$work/alice.token"
health_port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_loopserve "$LOOPSERVE" "$work/secure.err" \
  --tls_cert_file="$work/certs/server.pem" \
  --tls_key_file="$work/certs/server.key" \
  --auth_tokens_file="$work/tokens" --health_port="$health_port"
expect_contains "$(cat "$work/secure.err")" "over TLS with tokens, health on :$health_port" "secure ready line"
secure="localhost:$port"
tls=(--server "$secure" --tls_ca_file "$work/certs/ca.pem")
if out=$("$LOOPCTL" --server "$secure" list 2>&1); then
  fail "a plaintext client was served by a TLS server"
fi
expect_contains "$out" "UNAVAILABLE" "plaintext client"
if out=$("$LOOPCTL" "${tls[@]}" list 2>&1); then
  fail "a token-less client was served"
fi
expect_contains "$out" "UNAUTHENTICATED" "token-less client"
out=$("$LOOPCTL" "${tls[@]}" --token_file "$work/alice.token" run seed-loop -i num_steps=3 -i x=0)
expect_contains "$out" "result  x = 3" "TLS run with a token"
out=$("$LOOPCTL" --server "127.0.0.1:$health_port" health)
expect_contains "$out" "SERVING" "plaintext health port"
"$PYTHON" - <<PY || fail "python client over TLS with a token"
import sys
sys.path.insert(0, "$SOURCE_DIR/client/python")
import grpc
from loopserve_client import LoopClient
client = LoopClient("$secure", tls_ca_file="$work/certs/ca.pem", token="e2e-token-a")
assert "seed-loop" in [p.name for p in client.list()]
try:
    LoopClient("$secure", tls_ca_file="$work/certs/ca.pem").list()
    raise SystemExit("a token-less call was served")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
PY
kill -TERM "$server_pid"
wait "$server_pid" || fail "the secure loopserve exited with $? after SIGTERM"
server_pid=""
echo "e2e: all checks passed"
