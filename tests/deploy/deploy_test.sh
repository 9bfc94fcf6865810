#!/usr/bin/env bash
# The deployment, checked without a cluster or a Docker engine:
#  1. every kustomize overlay renders (kubectl kustomize; Debian's
#     kubernetes-client is installed when kubectl is missing);
#  2. every rendered object validates against the Kubernetes and Prometheus
#     Operator schemas, offline (validate.cjs, from the npm registry);
#  3. ports, probes, shutdown timing, the GPU request, the HPA's metric and
#     the alert runbooks agree with each other and with the server's flags
#     (check_manifests.py);
#  4. the ConfigMap's pipeline configuration passes loopserve --check_config;
#  5. the images' build logic holds: every path the Dockerfiles copy exists,
#     and scripts/runtime-packages finds a Debian package for every library
#     the built binaries load.
#
# Env: LOOPSERVE, LOOPCTL (the binaries), SOURCE_DIR.
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
command -v npm > /dev/null || install_debian nodejs npm

# 1. Render.
for overlay in cpu gpu secure; do
  kubectl kustomize "$SOURCE_DIR/deploy/k8s/overlays/$overlay" > "$work/$overlay.yaml" 2> "$work/$overlay.err" ||
    { cat "$work/$overlay.err"; fail "kubectl kustomize overlays/$overlay"; }
  echo "rendered overlays/$overlay: $(grep -c '^kind:' "$work/$overlay.yaml") objects"
done

# 2. Schemas, offline once installed (package-lock.json pins them).
if [ ! -d "$here/node_modules/kubernetes-models" ]; then
  # The system's trust store, so that a proxy's CA the machine trusts is
  # trusted by npm too (Debian's npm otherwise uses its own bundle).
  cafile=()
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cafile=(--cafile=/etc/ssl/certs/ca-certificates.crt)
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error "${cafile[@]}" > /dev/null)
fi
node "$here/validate.cjs" "$work/cpu.yaml" "$work/gpu.yaml" "$work/secure.yaml"

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
  grep -E '^COPY ' "$dockerfile" | grep -v -- '--from=' | awk '{print $2}' | while read -r source; do
    [ -e "$SOURCE_DIR/$source" ] || fail "$(basename "$dockerfile"): COPY $source: no such path"
  done
  # The scripts it runs exist and are executable.
  grep -oE 'scripts/[a-z_-]+' "$dockerfile" | sort -u | while read -r script; do
    [ -x "$SOURCE_DIR/$script" ] || fail "$(basename "$dockerfile"): $script is not an executable script"
  done
  # Its CMD's flags are loopserve's.
  grep -E '^CMD ' "$dockerfile" | grep -oE -- '--[a-z_]+' | while read -r flag; do
    grep -qE -- "^ +${flag} " <<< "$flags" || fail "$(basename "$dockerfile"): CMD flag $flag is not loopserve's"
  done
  echo "$(basename "$dockerfile"): copies, scripts and flags OK"
done
packages=$("$SOURCE_DIR/scripts/runtime-packages" "$LOOPSERVE" "$LOOPCTL")
for required in libtorch1.13 libgrpc++1.51 libprometheus-cpp-pull1.0 libpng16-16; do
  grep -qx "$required" <<< "$packages" || fail "runtime-packages misses $required"
done
echo "runtime-packages: $(wc -l <<< "$packages") packages, including libtorch1.13 and libgrpc++1.51"
echo PASS
