#!/usr/bin/env bash
# The deployment, checked without a cluster or a Docker engine:
#  1. every kustomize overlay renders (kubectl kustomize; Debian's
#     kubernetes-client is installed when kubectl is missing);
#  2. every rendered object validates offline (validate_manifests.py):
#     Kubernetes' kinds against Kubernetes' schemas (kubernetes-validate,
#     from PyPI), a PrometheusRule's rules with promtool (Debian's
#     prometheus, installed when missing);
#  3. ports, probes, shutdown timing, the GPU request, the HPA's metric and
#     the alert runbooks agree with each other and with the server's flags
#     (check_manifests.py);
#  4. the ConfigMap's pipeline configuration passes loopserve --check_config;
#  5. the images' build logic holds: every path the Dockerfiles copy exists,
#     every script they run is executable, scripts/runtime-packages finds a
#     Debian package for every system library the binaries load, and its
#     bundle holds every library of the torch wheel they load (with --cuda,
#     what --device=cuda loads too).
#
# Env: LOOPSERVE, LOOPCTL (the binaries), SOURCE_DIR, PYTHON.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
here=$SOURCE_DIR/tests/deploy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install_debian() {  # PACKAGE...
  [ "$(id -u)" -eq 0 ] || fail "$* missing and this test is not root to install it (apt-get install $*)"
  echo "installing Debian's $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" > /dev/null ||
    { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" > /dev/null; }
}
command -v kubectl > /dev/null || install_debian kubernetes-client
command -v promtool > /dev/null || install_debian prometheus

# 1. Render.
for overlay in cpu gpu secure; do
  kubectl kustomize "$SOURCE_DIR/deploy/k8s/overlays/$overlay" > "$work/$overlay.yaml" 2> "$work/$overlay.err" ||
    { cat "$work/$overlay.err"; fail "kubectl kustomize overlays/$overlay"; }
  echo "rendered overlays/$overlay: $(grep -c '^kind:' "$work/$overlay.yaml") objects"
done

# 2. Schemas, offline.
"$PYTHON" "$here/validate_manifests.py" "$(command -v promtool)" \
  "$work/cpu.yaml" "$work/gpu.yaml" "$work/secure.yaml"

# 3. Consistency.
"$PYTHON" "$here/check_manifests.py" "$SOURCE_DIR" "$work/cpu.yaml" "$work/gpu.yaml" "$work/secure.yaml"

# 4. The ConfigMap's configuration. The image holds deploy/models at
#    /opt/loopserve/models; here the source tree's copy stands in.
"$PYTHON" - "$work/cpu.yaml" "$SOURCE_DIR/deploy/models" > "$work/pipelines.pbtxt" << 'EOF'
import sys, yaml
for obj in yaml.safe_load_all(open(sys.argv[1])):
    if obj and obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("loopserve-config"):
        print(obj["data"]["pipelines.pbtxt"].replace("/opt/loopserve/models", sys.argv[2]))
EOF
"$LOOPSERVE" --check_config="$work/pipelines.pbtxt" || fail "the ConfigMap's configuration"

# 5. The images.
flags=$("$LOOPSERVE" --helpfull 2>&1 || true)
for dockerfile in "$SOURCE_DIR"/deploy/docker/Dockerfile*; do
  # COPY sources from the build context (not --from=stage) must exist.
  grep -E '^COPY ' "$dockerfile" | grep -v -- '--from=' | while read -r _ args; do
    read -ra paths <<< "$args"
    for source in "${paths[@]:0:${#paths[@]}-1}"; do
      [ -e "$SOURCE_DIR/$source" ] || fail "$(basename "$dockerfile"): COPY $source: no such path"
    done
  done
  # The scripts it runs exist and are executable.
  grep -vE '^(COPY|#)' "$dockerfile" | grep -oP 'scripts/[a-z_-]+(?![.\w])' | sort -u |
    while read -r script; do
      [ -x "$SOURCE_DIR/$script" ] || fail "$(basename "$dockerfile"): $script is not an executable script"
    done
  # Its CMD's flags are loopserve's.
  grep -E '^CMD ' "$dockerfile" | grep -oE -- '--[a-z_]+' | while read -r flag; do
    grep -qE -- "^ +${flag} " <<< "$flags" || fail "$(basename "$dockerfile"): CMD flag $flag is not loopserve's"
  done
  echo "$(basename "$dockerfile"): copies, scripts and flags OK"
done
# The runtime stage: Debian's packages for the system libraries, and a
# bundle (linked here, not copied) of the wheel's; with LD_LIBRARY_PATH on
# the bundle, nothing is loaded from the Python environment any more.
for mode in cpu cuda; do
  flags=(--bundle "$work/lib-$mode")
  [ "$mode" = cpu ] || flags+=(--cuda)
  packages=$(RUNTIME_BUNDLE_LINK=1 "$SOURCE_DIR/scripts/runtime-packages" "${flags[@]}" "$LOOPSERVE" "$LOOPCTL")
  for required in libgrpc++1.51 libprometheus-cpp-pull1.0 libpng16-16; do
    grep -qx "$required" <<< "$packages" || fail "runtime-packages ($mode) misses $required"
  done
  objects=("$LOOPSERVE" "$LOOPCTL")
  [ "$mode" = cpu ] || objects+=("$work/lib-$mode/libtorch_cuda.so")
  for object in "${objects[@]}"; do
    leaked=$(LD_LIBRARY_PATH="$work/lib-$mode" ldd "$object" | grep -E 'site-packages|not found' |
             grep -vE '^\s*lib(cuda|nvidia-ml)\.so\.1 ' || true)
    [ -z "$leaked" ] || fail "runtime-packages ($mode): the bundle misses what $object loads: $leaked"
  done
  for required in libtorch_cpu.so libc10.so libc10_cuda.so; do
    [ -e "$work/lib-$mode/$required" ] || fail "runtime-packages ($mode): no $required in the bundle"
  done
  echo "runtime-packages ($mode): $(wc -l <<< "$packages") Debian packages, $(ls "$work/lib-$mode" | wc -l) bundled libraries"
done
[ ! -e "$work/lib-cpu/libtorch_cuda.so" ] || fail "the CPU bundle holds libtorch_cuda.so"
echo PASS
