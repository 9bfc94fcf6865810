#!/usr/bin/env bash
# A plugin built outside the tree, as its author would build it: install
# loopserve, build blocks/examples/clamp_plugin against the installed
# package (find_package(loopserve)), serve it with --plugin and run it with
# loopctl. Then the refusals: a configuration that needs the plugin without
# it, and a plugin built against other headers.
#
# Env: BUILD_DIR (the configured build tree), SOURCE_DIR, WRONG_ABI_PLUGIN.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

prefix="$work/prefix"
cmake --install "$BUILD_DIR" --prefix "$prefix" >/dev/null
[ -f "$prefix/lib/cmake/loopserve/loopserveConfig.cmake" ] || fail "no package config installed"
[ -f "$prefix/include/loopserve/blocks/core/plugin.h" ] || fail "no headers installed"

# The author's build: only the plugin's own directory and the install prefix.
cp -r "$SOURCE_DIR/blocks/examples/clamp_plugin" "$work/clamp_plugin"
cmake -S "$work/clamp_plugin" -B "$work/plugin-build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/plugin-build" >/dev/null
ctest --test-dir "$work/plugin-build" --output-on-failure >"$work/plugin-tests.log" \
  || fail "the plugin's own tests: $(cat "$work/plugin-tests.log")"
grep -q "100% tests passed, 0 tests failed out of 3" "$work/plugin-tests.log" \
  || fail "the plugin's tests did not all run: $(cat "$work/plugin-tests.log")"
plugin="$work/plugin-build/libclamp_plugin.so"
[ -f "$plugin" ] || fail "the plugin was not built"
config="$work/clamp_plugin/clamp.pbtxt"
loopserve="$prefix/bin/loopserve"
loopctl="$prefix/bin/loopctl"

out=$("$loopserve" --check_config="$config" --plugin="$plugin" --device=cpu)
expect_contains "$out" "OK, 1 pipelines: gmm-ddim-clamped" "check_config with the plugin"
if out=$("$loopserve" --check_config="$config" --device=cpu 2>&1); then
  fail "a configuration that needs the plugin loaded without it"
fi
expect_contains "$out" "unknown component type 'clamp_range'" "check_config without the plugin"
if out=$("$loopserve" --check_config="$config" --plugin="$WRONG_ABI_PLUGIN" --device=cpu 2>&1); then
  fail "a plugin built against other headers was loaded"
fi
expect_contains "$out" "was built against other headers" "wrong ABI"

start_loopserve "$loopserve" "$work/server.err" --device=cpu \
  --plugin "$plugin" --config="$config"

out=$("$loopctl" --server="127.0.0.1:$port" describe gmm-ddim-clamped)
expect_contains "$out" "latents" "describe"
out=$("$loopctl" --server "127.0.0.1:$port" run gmm-ddim-clamped \
  --input=seed=3 -i num_inference_steps=10 --stream=latents --save-dir="$work/out")
expect_contains "$out" "iteration 10/10 [gmm-ddim-clamped/denoise]" "run"
"$PYTHON" - "$work/out" <<'PY' || fail "latents out of [-1, 1]"
import sys, glob, numpy as np
files = sorted(glob.glob(f"{sys.argv[1]}/latents_*.npy"))
assert len(files) == 10, files
for f in files:
    x = np.load(f)
    assert x.shape == (1, 4, 8, 8), x.shape
    assert np.abs(x).max() <= 1.0, (f, np.abs(x).max())
final = np.load(f"{sys.argv[1]}/latents.npy")
assert np.abs(final).max() <= 1.0
PY
kill -TERM "$server_pid"
wait "$server_pid" || fail "loopserve did not exit cleanly"
server_pid=""
echo "PASS: out-of-tree plugin built, checked, served and run"
