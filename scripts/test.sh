#!/usr/bin/env bash
# README command 2: install dependencies, build, run every test tier
# (unit, bpf, e2e, and the fuzz targets for 60 s each). bpf and e2e need
# root; CI runs as root.
#   scripts/test.sh [--no-install] [--sanitize] [ctest args...]   e.g. scripts/test.sh -L unit
# --sanitize: build with ASan + UBSan into ${BUILD_DIR:-build-asan} and run
# the unit, bpf and e2e tiers there (not fuzz: it has its own sanitizers).
# Any sanitizer report, in a test binary or in a program a test started (the
# agent, meshctl), fails the run; the reports are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
install=1 sanitize=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0; shift ;;
    --sanitize) sanitize=1; shift ;;
    *) break ;;
  esac
done
if [ "$install" = 1 ]; then scripts/install-deps.sh; fi
if [ "$sanitize" = 0 ]; then
  scripts/build.sh
  cd "${BUILD_DIR:-build}"
  exec ctest --output-on-failure --timeout 300 "$@"
fi

export BUILD_DIR=${BUILD_DIR:-build-asan}
scripts/build.sh --sanitize
cd "$BUILD_DIR"
# Reports go to files (log_path) as well as failing the process, so one from
# a child whose exit status a test does not look at still fails the run.
reports=$(pwd)/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1:log_path=$reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
export LSAN_OPTIONS="log_path=$reports/lsan"
rc=0
ctest --output-on-failure --timeout 600 -LE fuzz "$@" || rc=$?
if [ -n "$(ls -A "$reports")" ]; then
  echo "test.sh --sanitize: sanitizer reports in $reports:" >&2
  for f in "$reports"/*; do echo "==== $f" >&2; cat "$f" >&2; done
  rc=1
fi
exit $rc
