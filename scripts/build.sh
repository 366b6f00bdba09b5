#!/usr/bin/env bash
# Configures and builds everything (BPF objects, skeletons, agent, meshctl,
# bench programs, tests) into ${BUILD_DIR:-build}.
#   scripts/build.sh [--sanitize]
# --sanitize: ASan + UBSan on all C/C++ code (-DAIMESH_SANITIZE=ON), into
# ${BUILD_DIR:-build-asan}; the BPF objects are built as always.
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
cmake --build "$BUILD_DIR" -j"${JOBS:-$(nproc)}"
