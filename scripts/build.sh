#!/usr/bin/env bash
# Configures and builds everything (BPF objects, skeletons, agent, meshctl,
# bench programs, tests) into ${BUILD_DIR:-build}, or only the targets named.
#   scripts/build.sh [--sanitize] [TARGET...]
# --sanitize: ASan + UBSan on all C/C++ code (-DAIMESH_SANITIZE=ON), into
# ${BUILD_DIR:-build-asan}; the BPF objects are built as always.
# TARGET: e.g. demo (aimesh-agent, meshctl and model-server: what scripts/demo.sh runs).
# JOBS (default: nproc) sets the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
CMAKE_ARGS=()
if [ "${1:-}" = "--sanitize" ]; then
  shift
  BUILD_DIR=${BUILD_DIR:-build-asan}
  CMAKE_ARGS+=(-DAIMESH_SANITIZE=ON)
fi
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "${CMAKE_ARGS[@]}" >/dev/null
TARGETS=()
for t in "$@"; do TARGETS+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j"${JOBS:-$(nproc)}" "${TARGETS[@]}"
