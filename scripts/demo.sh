#!/usr/bin/env bash
# The main job: set-up, build, then a local cluster on this machine that
# trains the sparse example end to end: a coordinator, PS shards and worker
# processes on 127.0.0.1; the driver submits the job, prints progress
# (step, examples/s, held-out loss and AUC against the ground truth's, ETA)
# and a summary; then everything is stopped.
#
#   scripts/demo.sh [--chaos SECONDS] [ctr_example flags, e.g. --steps=6000 --json]
#
# Environment: PLEXUS_DEMO_PS (shards, default 2), PLEXUS_DEMO_WORKERS
# (default 2), PLEXUS_BUILD_DIR. --chaos S kills a random worker every S
# seconds (and restarts it); the job still reaches its target.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PLEXUS_BUILD_DIR:-$root/build}"
chaos=0
if [[ "${1:-}" == "--chaos" ]]; then chaos="${2:?--chaos needs seconds}"; shift 2; fi
"$root/scripts/build.sh"
dir="$(mktemp -d /tmp/plexus-demo-XXXXXX)"
plexus="$build/bin/plexus"
cleanup() { "$plexus" local down --dir "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$plexus" local up --dir "$dir" --ps "${PLEXUS_DEMO_PS:-2}" \
  --workers "${PLEXUS_DEMO_WORKERS:-2}" --chaos "$chaos"
rc=0
"$build/bin/ctr_example" --mode=train --cluster_dir="$dir" "$@" || rc=$?
"$plexus" local down --dir "$dir"
trap - EXIT
if [[ $rc -eq 0 ]]; then
  echo "demo: trained to the target and stopped cleanly (logs in $dir)"
else
  echo "demo: the training run failed (exit $rc; logs in $dir)" >&2
fi
exit $rc
