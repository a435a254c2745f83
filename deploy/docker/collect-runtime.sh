#!/usr/bin/env bash
# collect-runtime.sh BUILD_BIN DEST: copies what the runtime image needs into
# DEST: the Plexus programs and plexus-launch (with jq, which it uses) into
# DEST/bin, and every shared library they load, except the C library and the
# GPU driver (provided by the base image and the node), into DEST/lib.
set -euo pipefail
bin="$1"
dest="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$dest/bin" "$dest/lib"
for p in plexus plexus-ps plexus-coordinator ctr_example; do
  [ -x "$bin/$p" ] && cp "$bin/$p" "$dest/bin/"
done
[ -x "$dest/bin/plexus-ps" ] || { echo "collect-runtime: no plexus-ps in $bin" >&2; exit 1; }
cp "$here/../bin/plexus-launch" "$(command -v jq)" "$dest/bin/"
for f in "$dest"/bin/*; do
  [ "$(head -c 4 "$f" | tail -c 3)" = ELF ] || continue  # scripts have no libraries
  ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*|libcuda.so.*|libnvidia-*) ;;
    *) cp -L "$lib" "$dest/lib/" ;;
  esac
done
echo "collect-runtime: $(ls "$dest/bin" | wc -l) programs, $(ls "$dest/lib" | wc -l) libraries in $dest"
