#!/usr/bin/env bash
# The whole test suite: set-up, build, then every test through ctest.
# Extra arguments go to ctest (e.g. -R daemon, -L integration).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PLEXUS_BUILD_DIR:-$root/build}"
"$root/scripts/build.sh"
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 600 "$@"
