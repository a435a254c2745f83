#!/usr/bin/env bash
# The nemesis soak of the fault suite (tests/fault/nemesis.cc; not part of
# CI): for T minutes, rounds of the golden job on a fresh local cluster
# (2 PS shards, a checkpointing coordinator, 3 golden workers in network
# namespaces when run as root) with a random fault every few seconds:
# SIGKILL / SIGTERM / SIGSTOP of workers, shards and the coordinator, and
# partitions of workers from the shards or the coordinator. Each round must
# end golden (no acknowledged update lost or applied twice); the time to
# recover after each fault is printed, with a summary table at the end.
#
#   scripts/nemesis.sh [--minutes T] [--seed S] [--every_s S] [--build-dir DIR]
#                      [--no-build] [other nemesis flags]
#
# Exit 0 when every round was golden and every fault recovered.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="$src/build"
do_build=1
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ $do_build == 1 ]]; then
  flock /tmp/plexus-build.lock cmake --build "$build_dir" -j2 \
    --target nemesis plexus-ps plexus-coordinator golden_worker
fi
# A snapshot of the binaries: restarts must not pick up a rebuild that
# happens during the soak (or fail on a half-linked file).
bin="$(mktemp -d /tmp/plexus-nemesis-bin.XXXXXX)"
for b in nemesis plexus-ps plexus-coordinator golden_worker; do
  cp "$build_dir/bin/$b" "$bin/"
done
export PLEXUS_BIN_DIR="$bin"
pid=""
# The nemesis's daemons and workers die with it; its test hosts (network
# namespaces plxf<pid>-N) are removed here if it was stopped early.
cleanup() {
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^plxf$pid-" || true); do
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    done
  fi
  rm -rf "$bin"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
"$bin/nemesis" --logtostderr=0 --minloglevel=2 "${args[@]}" &
pid=$!
rc=0
wait "$pid" || rc=$?
exit "$rc"
