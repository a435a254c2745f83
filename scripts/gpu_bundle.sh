#!/usr/bin/env bash
# Gathers the GPU tests and benchmarks, with the shared libraries they need,
# into one folder that runs on a GPU machine which has the NVIDIA driver,
# CUDA, NCCL, UCX and Protobuf but not gRPC, RocksDB, glog, gflags or abseil
# (the project's GPU machines: Ubuntu 24.04, see ../shared/PITFALLS.md).
#
#   scripts/gpu_bundle.sh [--build DIR] [--out DIR] [--with-nccl]
#                         [--only NAME,...] [--with-perf]
#
# Build first (scripts/build.sh, or the targets gpu_test reduce_bench
# nccl_bench plexus-ps mlp_example ps_bench checkpoint_bench
# plexus-coordinator ctr_example plexus). The digits data of the dense
# example travels too when it is found here (scripts/fetch_data.sh).
# Then copy the folder (default build/gpu-bundle) to the GPU machine and run
# its run.sh: it sets LD_LIBRARY_PATH to the folder's lib/, checks that every
# binary's libraries resolve, runs the GPU tests, the benchmarks and both
# examples on CPU and GPU, and prints one report (also saved in the folder).
# ps_bench and checkpoint_bench travel for the GPU machine's cores and disk;
# run.sh does not run them (see README.md, GPU machines).
#
# What travels: every library ldd resolves for the binaries, except
#   - the C library family and the C++ runtime (libc, libm, libdl,
#     libpthread, librt, ld-linux, libstdc++, libgcc_s): the target's are
#     newer, and glibc must be the system's;
#   - the driver (libcuda, libnvidia-*): it must match the kernel module;
#   - UCX (libucp, libucs, libuct, libucm): it loads its transports from the
#     system's ucx/ folder, which must match the library's version;
#   - NCCL (218 MB; the target has it) unless --with-nccl.
# Binaries are copied without debug information (strip --strip-debug) to keep
# the folder small; their symbol tables stay, so profiles name functions.
#
# --only ps_bench,plexus-ps,plexus-coordinator: just those binaries (built
# in DIR/bin or DIR/tests) and their libraries, and no run.sh: a slim folder
# for running them by hand. --with-perf adds this machine's perf and every
# library it needs in perf/ (about 33 MB; the GPU machines have no perf):
#   LD_LIBRARY_PATH=perf/lib perf/perf record -F 1999 -D 3000 -- \
#     env LD_LIBRARY_PATH=lib PLEXUS_BIN_DIR=bin bin/ps_bench --shards 1 \
#     --data_plane direct --no_dense --dims 64 --batches 4096 \
#     --sparse_ops pull --seconds 4 --max_calls 100000
# (-D skips ps_bench's start and limit measurements, --max_calls lets a row
# run its whole --seconds; the binaries have no frame pointers, so -g call
# graphs say little). Three binaries with perf come to
# about 68 MB, over the machines' 64 MiB carry limit: carry the folder as a
# tar -cJf archive (about 17 MB) and unpack it there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
out=""
with_nccl=0
only=""
with_perf=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --with-nccl) with_nccl=1; shift ;;
    --only) only="$2"; shift 2 ;;
    --with-perf) with_perf=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || out="$build/gpu-bundle"

if [ -n "$only" ]; then
  binaries=()
  for name in ${only//,/ }; do
    if [ -x "$build/bin/$name" ]; then
      binaries+=("$build/bin/$name")
    else
      binaries+=("$build/tests/$name")
    fi
  done
else
  binaries=("$build/tests/gpu_test" "$build/bin/reduce_bench"
            "$build/bin/nccl_bench" "$build/bin/plexus-ps"
            "$build/bin/mlp_example" "$build/bin/ps_bench"
            "$build/bin/checkpoint_bench" "$build/bin/plexus-coordinator"
            "$build/bin/ctr_example" "$build/bin/plexus")
fi
for b in "${binaries[@]}"; do
  if [ ! -x "$b" ] && [ -n "$only" ]; then
    echo "gpu_bundle.sh: $b is missing: build it first" \
         "(cmake --build $build --target $(basename "$b"))" >&2
    exit 1
  fi
  if [ ! -x "$b" ]; then
    echo "gpu_bundle.sh: $b is missing: build it first (needs nvcc and NCCL:" \
         "cmake --build $build --target gpu_test reduce_bench nccl_bench plexus-ps mlp_example ps_bench checkpoint_bench plexus-coordinator ctr_example plexus)" >&2
    exit 1
  fi
done

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data"
for d in "${PLEXUS_DATA_DIR:-/nonexistent}/digits.csv.gz" \
         "${XDG_CACHE_HOME:-$HOME/.cache}/plexus/digits.csv.gz" \
         /usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz; do
  if [ -f "$d" ]; then cp "$d" "$out/data/"; break; fi
done
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|libresolv\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libnvidia-|libucp\.so|libucs\.so|libuct\.so|libucm\.so)'
if [ "$with_nccl" = 0 ]; then skip="$skip|^libnccl\\.so"; fi

declare -A copied=()
missing=0
for b in "${binaries[@]}"; do
  strip --strip-debug -o "$out/bin/$(basename "$b")" "$b"
  # "name => path (addr)", "name => not found", or "path (addr)".
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ "$name" =~ $skip ]]; then continue; fi
    if [ "$path" = "not" ]; then
      echo "gpu_bundle.sh: $(basename "$b") needs $name, which is not found here" >&2
      missing=1
      continue
    fi
    [ -n "${copied[$name]:-}" ] && continue
    cp -L "$path" "$out/lib/$name"
    copied[$name]=1
  done < <(ldd "$b")
done
[ "$missing" = 0 ] || exit 1

if [ "$with_perf" = 1 ]; then
  perf_bin="$(command -v perf || true)"
  if [ -z "$perf_bin" ]; then
    echo "gpu_bundle.sh: --with-perf: no perf here (apt-get install linux-perf)" >&2
    exit 1
  fi
  mkdir -p "$out/perf/lib"
  cp -L "$perf_bin" "$out/perf/perf"
  # Everything but the C library family and the C++ runtime, which the
  # target has (newer).
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ "$name" =~ ^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+\.so|libgcc_s\.so) ]]; then
      continue
    fi
    if [ "$path" = "not" ]; then
      echo "gpu_bundle.sh: perf needs $name, which is not found here" >&2
      exit 1
    fi
    cp -L "$path" "$out/perf/lib/$name"
  done < <(ldd "$perf_bin")
fi

commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
dirty=""
git -C "$root" diff --quiet HEAD -- 2>/dev/null || dirty=" (working tree had changes)"
{
  echo "commit $commit$dirty"
  echo "built on $(hostname) $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nvcc: $( (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version 2>/dev/null) | tail -1 || echo unknown)"
  echo "bundled NCCL: $([ "$with_nccl" = 1 ] && echo yes || echo no, the system one)"
  echo "libraries:"
  (cd "$out/lib" && ls -1)
} > "$out/MANIFEST"

if [ -n "$only" ]; then
  echo "gpu_bundle.sh: $out ($(du -sh "$out" | cut -f1)): $only, no run.sh;" \
       "run them with LD_LIBRARY_PATH=$out/lib"
  exit 0
fi

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the Plexus GPU tests and benchmarks of this folder and prints one
# report (also written to report.txt here, or to the file given as $1).
# Made by scripts/gpu_bundle.sh; see MANIFEST for what it was built from.
#   ./run.sh [report-file]
# Environment: GPU_TEST_TIMEOUT (s, default 900), BENCH_TIMEOUT (s, default
# 600 each), BENCH_MAX_MB (default 1024 for reduce_bench, 256 for
# nccl_bench), GTEST_FILTER (which tests).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
report="${1:-$here/report.txt}"
log="$(dirname "$report")/gpu_test.log"
rm -f "$log"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PLEXUS_BIN_DIR="$here/bin"
tests_timeout="${GPU_TEST_TIMEOUT:-900}"
bench_timeout="${BENCH_TIMEOUT:-600}"
status=0
run() {  # title, timeout, command...
  local title="$1" limit="$2"; shift 2
  echo
  echo "## $title"
  echo "\$ $*"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  [ "$rc" = 124 ] && echo "(stopped after ${limit}s)"
  echo "(exit status $rc)"
  return "$rc"
}
# The same for a step that needs a GPU: it says it skipped where none is.
have_gpu=0
nvidia-smi -L 2>/dev/null | grep -q '^GPU' && have_gpu=1
gpu_run() {
  if [ "$have_gpu" = 1 ]; then run "$@"; return; fi
  echo
  echo "## $1"
  echo "skipped: no usable GPU here (nvidia-smi lists none)"
}
{
  echo "# Plexus GPU report, $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  sed 's/^/# /' "$here/MANIFEST" | head -4
  echo "# $(uname -srm); $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown OS}")"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader |
      sed 's/^/# GPU /'
  else
    echo "# nvidia-smi: not found"
  fi
  echo
  echo "## libraries"
  unresolved=0
  for b in "$here"/bin/*; do
    miss="$(ldd "$b" 2>&1 | grep 'not found' | grep -v 'libcuda\.so')"
    if [ -n "$miss" ]; then
      echo "$(basename "$b") cannot start here:"; echo "$miss"; unresolved=1
    fi
  done
  if [ "$unresolved" = 0 ]; then
    echo "every binary's libraries resolve"
  else
    echo "install the missing libraries (or re-bundle with --with-nccl) first"
    status=1
  fi
  if [ "$status" = 0 ]; then
    run "GPU tests" "$tests_timeout" "$here/bin/gpu_test" --gtest_color=no \
      ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$log" 2>&1
    rc=$?
    cat "$log"
    [ "$rc" = 0 ] || status=1
    run "CUDA reduction kernels vs device-to-device copy" "$bench_timeout" \
      "$here/bin/reduce_bench" --max_mb "${BENCH_MAX_MB:-1024}" || status=1
    run "NCCL backend vs raw NCCL; hierarchical vs the staging limit" \
      "$bench_timeout" "$here/bin/nccl_bench" --max_mb "${BENCH_MAX_MB:-256}" ||
      status=1
    if [ -f "$here/data/digits.csv.gz" ]; then
      mlp=("$here/bin/mlp_example" --data="$here/data/digits.csv.gz"
           --report_every=10)
      run "Dense example on the CPU (one process)" "$bench_timeout" \
        "${mlp[@]}" --mode=baseline --device=cpu || status=1
      for i in 1 2; do
        gpu_run "Dense example on the GPU (one process, run $i)" "$bench_timeout" \
          "${mlp[@]}" --mode=baseline --device=gpu || status=1
      done
      gpu_run "Dense example on the GPU, one worker process, NCCL" \
        "$bench_timeout" "${mlp[@]}" --mode=local --workers=1 --device=gpu ||
        status=1
    else
      echo; echo "## dense example: no digits data in $here/data (skipped)"
    fi
    ctr=("$here/bin/ctr_example" --steps=300 --examples=307200
         --config=zipf_s=1.3 --test_examples=20000 --eval_examples=5000
         --progress_s=2 --target_gap=1)
    run "Sparse example, one process, --device=cpu (300 steps)" \
      "$bench_timeout" "${ctr[@]}" --mode=baseline --device=cpu || status=1
    gpu_run "Sparse example, one process, --device=gpu (300 steps)" \
      "$bench_timeout" "${ctr[@]}" --mode=baseline --device=gpu || status=1
    cluster="$(mktemp -d)/cluster"  # plexus local up makes it
    gpu_run "Local cluster: 1 PS shard, 1 GPU worker" "$bench_timeout" \
      "$here/bin/plexus" local up --dir "$cluster" --ps 1 --workers 1 \
      --bin-dir "$here/bin" \
      --worker "$here/bin/ctr_example --mode=worker --device=gpu" || status=1
    gpu_run "Sparse example trained through the PS by the GPU worker" \
      "$bench_timeout" "$here/bin/ctr_example" --mode=train \
      --cluster_dir="$cluster" --device=gpu --job=ctr-gpu --steps=1500 \
      --examples=1536000 --config=zipf_s=1.3 --test_examples=50000 \
      --eval_examples=5000 --progress_s=2 || status=1
    grep -h "computes on" "$cluster"/worker-0/log 2>/dev/null | tail -1
    "$here/bin/plexus" local down --dir "$cluster" >/dev/null 2>&1
  fi
  echo
  echo "## summary"
  if [ -f "$log" ]; then
    grep -E '^\[  PASSED  \] [0-9]+ test|^\[  SKIPPED \] [0-9]+ test|^\[  FAILED  \] [0-9]+ test' "$log" || true
    grep -A1000 -E '^\[  FAILED  \] [0-9]+ test' "$log" | grep -E '^\[  FAILED  \] [A-Za-z]' || true
    grep -m1 -h 'no usable GPU' "$log" | sed 's/^/skipped because: /' || true
  fi
  if [ "$status" = 0 ]; then
    echo "every step ran and passed"
  else
    echo "SOME STEPS FAILED (see above)"
  fi
  exit "$status"
} 2>&1 | tee "$report"
rc=${PIPESTATUS[0]}
echo "report: $report"
exit "$rc"
RUN
chmod +x "$out/run.sh"
echo "gpu_bundle.sh: $out ($(du -sh "$out" | cut -f1)); on the GPU machine run $out/run.sh"
