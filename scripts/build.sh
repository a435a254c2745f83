#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), configures and builds Plexus
# into ./build (or $PLEXUS_BUILD_DIR) with every core. Extra arguments go to
# CMake's configure step, e.g. -DPLEXUS_SANITIZER=address.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PLEXUS_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
mkdir -p "$build"
log="$build/configure.log"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" "$@" >"$log" 2>&1 \
  || { cat "$log"; exit 1; }
grep -E '^-- plexus:' "$log" || true
cmake --build "$build" -j "$(nproc)"
