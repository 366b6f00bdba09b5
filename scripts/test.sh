#!/usr/bin/env bash
# README command 2: install dependencies, build, run every test tier
# (unit, bpf, e2e). bpf and e2e need root; CI runs as root.
#   scripts/test.sh [--no-install] [ctest args...]   e.g. scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--no-install" ]; then shift; else scripts/install-deps.sh; fi
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 300 "$@"
