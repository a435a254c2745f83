#!/usr/bin/env bash
# Installs every Debian package that Plexus's build, tests and benchmarks need.
# Idempotent and non-interactive: packages already present are not touched, and
# apt-get runs only when something is missing. Sourced package list: deploy/packages.txt
# (the Dockerfile uses the same file).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
list="$here/deploy/packages.txt"

mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$list" | awk '{print $1}')
missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#wanted[@]} packages present"
else
  echo "setup: installing ${#missing[@]} missing package(s): ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found at /usr/local/cuda (GPU code will be compiled)"
else
  echo "setup: no CUDA toolkit at /usr/local/cuda (building without GPU support)"
fi
"$here/scripts/fetch_data.sh" || echo "setup: WARNING: the examples' data sets are missing (mlp_example_test fails until scripts/fetch_data.sh succeeds)" >&2
