#!/usr/bin/env bash
# libFuzzer targets of the fault suite (tests/fault/fuzz): the PS requests,
# the coordinator requests and the rendezvous / group RPCs. Builds them with
# clang, -fsanitize=fuzzer-no-link,address on the whole service code, in
# their own build folder, then runs each for a bounded time and prints one
# summary line per target (executions, crashes). Not part of CI.
#
#   scripts/fuzz.sh [--seconds S] [--jobs J] [--build-dir DIR] [--only NAME]
#                   [--no-build]
#
# Defaults: 600 s per target, 1 at a time, build-fuzz. Corpora and crash
# reproducers go to DIR/fuzz-out/<target>/; the exit code is 1 if any target
# found a crash.
set -euo pipefail

seconds=600
jobs=1
build_dir=""
only=""
do_build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

src="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${build_dir:-$src/build-fuzz}"
targets=(ps_request_fuzzer coordinator_request_fuzzer rendezvous_fuzzer)
[[ -n "$only" ]] && targets=("$only")

clangxx="$(command -v clang++-14 || command -v clang++ || true)"
clangc="$(command -v clang-14 || command -v clang || true)"
if [[ -z "$clangxx" ]]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2
  exit 2
fi

if [[ $do_build == 1 ]]; then
  mkdir -p "$build_dir"
  # clang warns where gcc does not: the project's -Werror stays for gcc.
  wrap="$build_dir/clang++-wrap"
  printf '#!/bin/sh\nexec %s "$@" -Wno-error\n' "$clangxx" > "$wrap"
  chmod +x "$wrap"
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S "$src" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER="$clangc" -DCMAKE_CXX_COMPILER="$wrap" \
      -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address" \
      -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address" \
      -DPLEXUS_FUZZ=ON -DPLEXUS_WITH_CUDA=OFF -DPLEXUS_BUILD_BENCH=OFF
  fi
  cmake --build "$build_dir" -j"$(nproc)" --target "${targets[@]}"
fi

out="$build_dir/fuzz-out"
mkdir -p "$out"
status=0
run_one() {
  local t="$1" dir="$out/$1"
  mkdir -p "$dir/corpus" "$dir/crashes"
  ASAN_OPTIONS=detect_leaks=0 "$build_dir/fuzz/$t" "$dir/corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=4096 -print_final_stats=1 -artifact_prefix="$dir/crashes/" \
    > "$dir/log" 2>&1 || true
  local execs crashes
  execs="$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || echo '?')"
  crashes="$(find "$dir/crashes" -type f | wc -l)"
  echo "$t: ${seconds}s, ${execs} executions, ${crashes} crash(es), corpus $(ls "$dir/corpus" | wc -l) inputs (log: $dir/log)"
  [[ "$crashes" == 0 ]]
}
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [[ ${#pids[@]} -ge $jobs ]]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
