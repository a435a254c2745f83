#!/usr/bin/env bash
# The main job: set-up, build, then a local cluster on this machine.
# Until the end-to-end training demo lands, it starts a coordinator and PS
# shards, checks every process's health, and stops them again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PLEXUS_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
dir="$(mktemp -d /tmp/plexus-demo-XXXXXX)"
plexus="$build/bin/plexus"
cleanup() { "$plexus" local down --dir "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$plexus" local up --dir "$dir" --ps "${PLEXUS_DEMO_PS:-2}"
"$plexus" local status --dir "$dir"
"$plexus" local down --dir "$dir"
trap - EXIT
echo "demo: the cluster started, served and stopped cleanly (logs in $dir)"
