#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*.cc) with clang into
# ${BUILD_DIR:-build-fuzz} and runs each for N seconds (default 60) on a copy
# of its seed corpus (tests/fuzz/corpus/<target>; the committed seeds are
# never changed). Exits non-zero if any target crashes, leaks, times out or
# breaks an invariant; the crashing input's path is printed
# ("crash artifact: ..."). docs/testing.md#fuzzing says what each covers.
#   scripts/fuzz.sh [--seconds N] [target...]    e.g. scripts/fuzz.sh --seconds 300 fuzz_nat_parse
# JOBS (default 2) sets the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=()
  for f in tests/fuzz/fuzz_*.cc; do targets+=("$(basename "$f" .cc)"); done
fi
BUILD_DIR=${BUILD_DIR:-build-fuzz}
CC=${FUZZ_CC:-clang} CXX=${FUZZ_CXX:-clang++} cmake -S . -B "$BUILD_DIR" -DAIMESH_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target "${targets[@]}"

out=$(cd "$BUILD_DIR" && pwd)/fuzz-run
rm -rf "$out" && mkdir -p "$out"
failed=()
for t in "${targets[@]}"; do
  corpus=$out/$t/corpus
  mkdir -p "$corpus" "$out/$t/artifacts"
  cp tests/fuzz/corpus/"$t"/* "$corpus"/
  echo "== $t: ${seconds}s on $(ls "$corpus" | wc -l) seeds"
  rc=0
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a 2 GiB
  # input-driven allocation is a bug. Output to a log, its summary printed.
  "$BUILD_DIR/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/$t/artifacts/" "$corpus" >"$out/$t/log" 2>&1 || rc=$?
  # Coverage at the start (seeds only) and at the end, and the speed.
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
    "$out/$t/log" || true
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "== $t FAILED (exit $rc); log: $out/$t/log" >&2
    grep -E 'ERROR: |SUMMARY: |invariant failed|runtime error' "$out/$t/log" | head -20 >&2 || true
    for a in "$out/$t/artifacts"/*; do
      [ -e "$a" ] && echo "crash artifact: $a (reproduce: $BUILD_DIR/$t $a)" >&2
    done
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${seconds}s without a crash"
