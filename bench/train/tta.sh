#!/usr/bin/env bash
# The time-to-accuracy table of both examples in one run: the sparse example
# (sparse_tta.sh: asynchronous training through the PS) and the dense one
# (dense_tta.sh: synchronous all-reduce), each with 1, 2 and 4 workers
# against its single-process baseline, with steps/s and the share of step
# time spent waiting on communication.
#
#   bench/train/tta.sh [--reps N]    (default 3; more reps, steadier medians)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reps=3
if [ "${1:-}" = "--reps" ]; then reps="${2:?--reps needs a number}"; fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  source "$here/tta_common.sh"
  usage "$0"; exit 0
fi
echo "== sparse example (CTR through the PS) =="
"$here/sparse_tta.sh" --reps "$reps"
echo
echo "== dense example (MLP by all-reduce) =="
"$here/dense_tta.sh" --reps "$reps"
