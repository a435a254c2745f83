#!/usr/bin/env bash
# Puts the data sets the examples train on into the data cache, once.
#
#   scripts/fetch_data.sh            # prints the path of each data set
#
# Digits (the dense example, examples/mlp): the 1797 8x8 handwritten digits
# that scikit-learn ships as sklearn/datasets/data/digits.csv.gz (64 pixel
# values 0..16, then the label 0..9, one image a line). Debian's
# python3-sklearn package holds it; installing that package would pull in
# scipy and more, so when it is not installed we download the .deb with
# apt-get and extract only this one file.
#
# Cache folder: $PLEXUS_DATA_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/plexus.
# mlp_example looks there (and at the installed package's file) by itself.
# Idempotent: a data set already in the cache is left alone.
set -euo pipefail

cache="${PLEXUS_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plexus}"
mkdir -p "$cache"
digits="$cache/digits.csv.gz"
member="usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"

# A usable copy has 1797 lines of 65 comma-separated values.
valid() {
  [ -s "$1" ] && gzip -dc "$1" 2>/dev/null |
    awk -F, 'NF != 65 { bad = 1 } END { exit (bad || NR != 1797) }'
}

if valid "$digits"; then
  echo "fetch_data: digits already in $digits"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if valid "/$member"; then
  echo "fetch_data: digits from the installed python3-sklearn (/$member)"
  cp "/$member" "$tmp/digits.csv.gz"
else
  echo "fetch_data: downloading python3-sklearn with apt-get to extract digits.csv.gz"
  # apt-get download writes into the current folder. As root, apt warns that
  # its _apt user cannot write to our private temp folder and downloads as
  # root instead: harmless, so that line is dropped.
  download() {
    (cd "$tmp" && apt-get download -qq python3-sklearn 2>&1 |
      { grep -v 'unsandboxed as root' || true; } >&2; exit "${PIPESTATUS[0]}")
  }
  # A fresh machine (or image) may have no package lists yet: update once.
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! download && ! { $sudo apt-get update -qq && download; }; then
    echo "fetch_data: 'apt-get download python3-sklearn' failed (network or apt sources?)." >&2
    echo "fetch_data: alternatively install it (apt-get install python3-sklearn) or copy" >&2
    echo "fetch_data: sklearn/datasets/data/digits.csv.gz from any scikit-learn to $digits" >&2
    exit 1
  fi
  dpkg-deb --fsys-tarfile "$tmp"/python3-sklearn_*.deb |
    tar -x -C "$tmp" "./$member"
  mv "$tmp/$member" "$tmp/digits.csv.gz"
fi

if ! valid "$tmp/digits.csv.gz"; then
  echo "fetch_data: the extracted digits.csv.gz is not 1797 lines of 65 values" >&2
  exit 1
fi
mv "$tmp/digits.csv.gz" "$digits"
echo "fetch_data: digits in $digits"
