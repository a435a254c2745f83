#!/usr/bin/env bash
# Time to accuracy of the dense example (build/bin/mlp_example: an MLP on
# scikit-learn's digits, synchronous all-reduce of the gradients) with 1, 2 and
# 4 workers against the single-process baseline, in the same run.
#
#   bench/train/dense_tta.sh [--workers "1 2 4"] [--reps 5] [--target 0.90]
#                            [--epochs 30] [--json FILE] [--bin DIR]
#                            [-- more mlp_example flags, e.g. --hidden=512]
#
# Every configuration trains the same global batches (same seed), so they
# reach the same accuracy at the same step; what differs is the time a step
# takes. The configurations run interleaved, --reps times, and the table shows
# medians (the machine is shared and noisy: read the ratios):
#   tta_s      seconds from the first step until the test accuracy first
#              reached --target (evaluated once per epoch), the figure that
#              matters; x_base is it over the baseline's
#   run_s      the whole process tree, start-up and connecting included
#   steps/s    training steps per second of step time (evaluation excluded)
#   comm       the share of step time spent inside the all-reduce, waiting for
#              slower peers included
#   failed     runs that exited non-zero (errors printed as they happen); the
#              script then exits 1
# Needs the digits data (scripts/fetch_data.sh) and a built tree.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=bench/train/tta_common.sh
source "$here/bench/train/tta_common.sh"
bin="${PLEXUS_BUILD_DIR:-$here/build}/bin"
workers="1 2 4"
reps=5
target=0.90
epochs=30
json=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --target) target="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage "$0"; exit 0 ;;
    *) echo "dense_tta: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
exe="$bin/mlp_example"
if [ ! -x "$exe" ]; then
  echo "dense_tta: $exe not found; build it: cmake --build build --target mlp_example" >&2
  exit 1
fi


configs=(baseline)
for w in $workers; do configs+=("$w"); done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
common=(--json --epochs="$epochs" --target_accuracy="$target" "${extra[@]}")

echo "dense_tta: $(nproc) cores, ${reps} reps, target test accuracy $target, $epochs epochs; $("$exe" --version 2>&1 | head -1)"
for ((rep = 1; rep <= reps; rep++)); do
  for c in "${configs[@]}"; do
    if [ "$c" = baseline ]; then args=(--mode=baseline); else args=(--mode=local --workers="$c"); fi
    t0=$(date +%s.%N)
    if ! out="$("$exe" "${args[@]}" "${common[@]}" 2>"$tmp/err")"; then
      # A failed run is a result too: counted, shown, left out of the medians.
      echo "dense_tta: run $rep of $c failed:" >&2
      grep -v '^\[' "$tmp/err" | tail -6 >&2
      echo x >>"$tmp/$c.failed"
      continue
    fi
    t1=$(date +%s.%N)
    s="$(grep '^{"event":"summary"' <<<"$out")"
    {
      echo "$(field "$s" time_to_target_s) $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" \
           "$(field "$s" steps_per_s) $(field "$s" comm_share)" \
           "$(field "$s" test_accuracy) $(field "$s" epoch_at_target)" \
           "$(field "$s" algorithm)"
    } >>"$tmp/$c"
  done
done

col() { [ -f "$tmp/$1" ] || { echo nan; return; }; awk -v k="$2" '{print $k}' "$tmp/$1" | median; }
failed() { [ -f "$tmp/$1.failed" ] && wc -l <"$tmp/$1.failed" || echo 0; }
base_tta="$(col baseline 1)"
printf '\n%-10s %7s %8s %7s %7s %10s %6s %8s %6s %6s %s\n' \
  setup workers tta_s x_base run_s steps/s comm test_acc epoch failed algorithm
rows=()
for c in "${configs[@]}"; do
  tta="$(col "$c" 1)"; run="$(col "$c" 2)"; sps="$(col "$c" 3)"
  comm="$(col "$c" 4)"; acc="$(col "$c" 5)"; ep="$(col "$c" 6)"
  fails="$(failed "$c")"
  algo=""
  if [ -f "$tmp/$c" ]; then
    algo="$(awk '{print $7}' "$tmp/$c" | sort | uniq -c | sort -rn | awk 'NR==1{print $2}')"
  fi
  if [ "$c" = baseline ]; then name=baseline; w=1; else name=allreduce; w="$c"; fi
  if [ "$tta" = nan ]; then
    printf '%-10s %7s %8s %7s %7s %10s %6s %8s %6s %6s %s\n' "$name" "$w" "-" "-" "-" "-" "-" "-" "-" "$fails" "(every run failed)"
    rows+=("{\"setup\":\"$name\",\"workers\":$w,\"failed\":$fails,\"reps\":$reps}")
    continue
  fi
  if [ "$tta" = null ] || [ "$base_tta" = null ] || [ "$base_tta" = nan ]; then ratio=null; else
    ratio="$(awk -v a="$tta" -v b="$base_tta" 'BEGIN{printf "%.2f", a / b}')"; fi
  printf '%-10s %7s %8s %7s %7.2f %10.0f %5.0f%% %7.2f%% %6s %6s %s\n' \
    "$name" "$w" "$tta" "$ratio" "$run" "$sps" \
    "$(awk -v x="$comm" 'BEGIN{print 100 * x}')" \
    "$(awk -v x="$acc" 'BEGIN{print 100 * x}')" "$ep" "$fails" "$algo"
  rows+=("{\"setup\":\"$name\",\"workers\":$w,\"tta_s\":$tta,\"tta_over_baseline\":$ratio,\"run_s\":$run,\"steps_per_s\":$sps,\"comm_share\":$comm,\"test_accuracy\":$acc,\"epoch_at_target\":$ep,\"algorithm\":\"$algo\",\"reps\":$reps,\"failed\":$fails,\"target\":$target}")
done
echo "(medians of the successful runs of $reps; tta_s null: target not reached; failed: runs that exited non-zero, their errors above)"
any_failed=0
for c in "${configs[@]}"; do [ "$(failed "$c")" = 0 ] || any_failed=1; done
if [ -n "$json" ]; then
  (IFS=,; echo "[${rows[*]}]") >"$json"
  echo "dense_tta: wrote $json"
fi
exit "$any_failed"
