#!/usr/bin/env bash
# Installs the Linux source tree as a benchmark corpus (issue 12) and prints its path.
#   BENCH_CORPUS_DIR  where the unpacked tree lives (default /work/corpus/linux-6.1,
#                     shared with other engineers; created once, reused afterwards).
# Debian's `linux-source` package ships /usr/src/linux-source-*.tar.xz; it is
# installed with apt-get if missing and unpacked once. Output: the tree's path.
set -euo pipefail
dir=${BENCH_CORPUS_DIR:-/work/corpus/linux-6.1}
# The tree is moved into place only when fully unpacked, so its presence means done.
if [ -d "$dir" ]; then echo "$dir"; exit 0; fi
tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$tarball" ]; then
  echo "installing linux-source" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-source) >&2
  tarball=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -1)
fi
echo "unpacking $tarball into $dir" >&2
tmp=$dir.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
tar -xJf "$tarball" -C "$tmp" --strip-components=1
rm -rf "$dir"
mv "$tmp" "$dir"
echo "$dir"
