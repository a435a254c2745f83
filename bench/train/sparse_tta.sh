#!/usr/bin/env bash
# Time to accuracy of the sparse example (build/bin/ctr_example: a
# factorisation-machine CTR model trained asynchronously through the PS with
# Adagrad) with 1, 2 and 4 workers on a local cluster (coordinator + PS
# shards as processes) against the single-process baseline (same model, the
# PS's own optimizer code, no RPC), in the same run.
#
#   bench/train/sparse_tta.sh [--workers "1 2 4"] [--ps 2] [--reps 3]
#                             [--steps 3000] [--json FILE] [--bin DIR]
#                             [-- more ctr_example flags]
#
# Target: held-out AUC within 0.01 of the ground-truth model's (scored on
# 20k held-out examples every second). Columns (medians over --reps):
#   tta_s      seconds from job submission until the target was first seen
#   x_base     tta_s over the baseline's
#   run_s      the whole training run (all --steps)
#   steps/s    steps of 1024 examples per second over the run
#   auc_gap    ground-truth AUC minus the final held-out AUC (100k examples)
#   comm       share of the workers' step time spent in PS pulls and pushes
#              (from the workers' logs); '-' for the baseline
# Asynchronous training: more workers apply more stale gradients, so the
# steps to target can grow with the workers; tta_s is what matters.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=bench/train/tta_common.sh
source "$here/bench/train/tta_common.sh"
bin="${PLEXUS_BUILD_DIR:-$here/build}/bin"
workers="1 2 4"
ps=2
reps=3
steps=3000
json=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --ps) ps="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage "$0"; exit 0 ;;
    *) echo "sparse_tta: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
exe="$bin/ctr_example"
plexus="$bin/plexus"
for b in "$exe" "$plexus"; do
  if [ ! -x "$b" ]; then
    echo "sparse_tta: $b not found; build first (scripts/build.sh)" >&2
    exit 1
  fi
done


tmp="$(mktemp -d /tmp/sparse-tta-XXXXXX)"
cleanup() {
  "$plexus" local down --dir "$tmp/cluster" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
common=(--json --steps="$steps" --progress_s=1 "${extra[@]}")
configs=(baseline)
for w in $workers; do configs+=("$w"); done

echo "sparse_tta: $(nproc) cores, $ps PS shards, $reps reps, $steps steps of 1024 examples; target held-out AUC within 0.01 of the truth"
for ((rep = 1; rep <= reps; rep++)); do
  for c in "${configs[@]}"; do
    comm="-"
    if [ "$c" = baseline ]; then
      out="$("$exe" --mode=baseline "${common[@]}" 2>"$tmp/err")" || {
        cat "$tmp/err" >&2; exit 1; }
    else
      rm -rf "$tmp/cluster"
      "$plexus" local up --dir "$tmp/cluster" --ps "$ps" --workers "$c" \
        --worker "$exe --mode=worker" >"$tmp/up" 2>&1 || {
        cat "$tmp/up" >&2; exit 1; }
      out="$("$exe" --mode=train --cluster_dir="$tmp/cluster" "${common[@]}" 2>"$tmp/err")" || {
        cat "$tmp/err" >&2; exit 1; }
      "$plexus" local down --dir "$tmp/cluster" >/dev/null
      comm="$(grep -ho 'comm_share [0-9.]*' "$tmp"/cluster/worker-*/log |
        awk '{s += $2; n++} END { if (n) printf "%.3f", s / n; else print "-" }')"
    fi
    s="$(grep '^{"event":"summary"' <<<"$out")"
    echo "$(field "$s" time_to_target_s) $(field "$s" elapsed_s) $(field "$s" steps_per_s) $(field "$s" truth_auc) $(field "$s" test_auc) $comm" >>"$tmp/$c"
    [ -n "$json" ] && echo "{\"config\":\"$c\",\"rep\":$rep,\"comm_share\":\"$comm\",\"summary\":$s}" >>"$json"
    echo "  rep $rep $c: tta $(field "$s" time_to_target_s) s, auc $(field "$s" test_auc) (truth $(field "$s" truth_auc)), comm $comm" >&2
  done
done

printf "\n%-9s %8s %7s %7s %8s %8s %6s\n" config tta_s x_base run_s steps/s auc_gap comm
base=""
for c in "${configs[@]}"; do
  tta=$(awk '{print $1}' "$tmp/$c" | median)
  run=$(awk '{print $2}' "$tmp/$c" | median)
  sps=$(awk '{print $3}' "$tmp/$c" | median)
  gap=$(awk '{print $4 - $5}' "$tmp/$c" | median)
  comm=$(awk '{print $6}' "$tmp/$c" | { grep -v -- - || true; } | median)
  [ "$c" = baseline ] && base="$tta" && comm="-"
  xb=$(awk -v a="$tta" -v b="$base" 'BEGIN { if (a < 0 || b <= 0) print "-"; else printf "%.2f", a / b }')
  name="$c"; [ "$c" != baseline ] && name="${c}w"
  printf "%-9s %8.1f %7s %7.1f %8.1f %8.4f %6s\n" "$name" "$tta" "$xb" "$run" "$sps" "$gap" "$comm"
done
