#!/usr/bin/env bash
# What the set-up says when it cannot do its work, instead of building
# something else:
#  1. scripts/setup without PyPI stops, saying what it needs and how to
#     give it (nothing is installed into the environment it was making);
#  2. configuring against a libtorch of the old C++ ABI stops, naming it
#     and what to use instead (Note [libtorch ABI]);
#  3. configuring with a Python that has no torch stops, naming the fix.
#
# Env: SOURCE_DIR, PYTHON (the project's environment's Python).
set -euo pipefail
source "$(dirname "$0")/../e2e/lib.sh"

echo "== scripts/setup without PyPI"
# A port nothing listens on as the index, no cache, no retries: pip fails at
# once, as on a machine that cannot reach PyPI.
if out=$(LOOPSERVE_SETUP_PACKAGES=0 LOOPSERVE_VENV="$work/venv" \
         PIP_INDEX_URL="http://127.0.0.1:$(free_port)/simple" PIP_NO_CACHE_DIR=1 \
         PIP_RETRIES=0 PIP_TIMEOUT=2 PIP_FIND_LINKS= \
         "$SOURCE_DIR/scripts/setup" 2>&1); then
  fail "scripts/setup succeeded without an index: $out"
fi
expect_contains "$out" "pip could not install scripts/requirements.txt" "setup without PyPI"
expect_contains "$out" "It needs PyPI" "setup without PyPI"
expect_contains "$out" "PIP_INDEX_URL" "setup without PyPI"
[ ! -e "$work/venv/.loopserve-requirements" ] || fail "a failed set-up marked its environment made"

echo "== a libtorch of the old C++ ABI"
mkdir -p "$work/old-abi"
cat > "$work/old-abi/TorchConfig.cmake" <<'CMAKE'
# A stand-in for a libtorch built with _GLIBCXX_USE_CXX11_ABI=0.
set(Torch_VERSION 2.6.0)
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")
set(TORCH_LIBRARY /nonexistent/libtorch.so)
set(TORCH_INCLUDE_DIRS /nonexistent/include)
set(Torch_FOUND TRUE)
CMAKE
if out=$(cmake -S "$SOURCE_DIR" -B "$work/build-old-abi" -G Ninja \
         -DLOOPSERVE_PYTHON="$PYTHON" -DLOOPSERVE_TORCH_PREFIX="$work/old-abi" 2>&1); then
  fail "configured against a libtorch of the old ABI"
fi
out=$(tr -s ' \n' ' ' <<< "$out")  # CMake wraps its messages
expect_contains "$out" "was built with _GLIBCXX_USE_CXX11_ABI=0" "old ABI"
expect_contains "$out" "Use the torch wheel of scripts/requirements.txt" "old ABI"

echo "== a Python without torch"
"$PYTHON" -m venv "$work/bare"
if out=$(cmake -S "$SOURCE_DIR" -B "$work/build-bare" -G Ninja \
         -DLOOPSERVE_PYTHON="$work/bare/bin/python" 2>&1); then
  fail "configured with a Python that has no torch"
fi
out=$(tr -s ' \n' ' ' <<< "$out")
expect_contains "$out" "cannot import torch: run scripts/setup" "no torch"
echo PASS
