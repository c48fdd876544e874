#!/usr/bin/env bash
# Issue 2 benchmark: `mkfs-crypt create` against `tar -cf`, `mke2fs -t ext4 -d` and
# `mkfs.erofs` on the same input, and `fsck-crypt extract` against `tar -xf`.
# Corpus (full): 100,000 small files and 4 × 1 GiB files. BENCH_SCALE=small: 5,000 and 2 × 64 MiB.
source "$(dirname "$0")/lib.sh"
build_release
ensure_tools
if [ "$BENCH_SCALE" = small ]; then NSMALL=5000; NLARGE=2; LMIB=64; else NSMALL=100000; NLARGE=4; LMIB=1024; fi
cd "$BENCH_DIR"
echo "corpus in $BENCH_DIR: $NSMALL small files; $NLARGE x $LMIB MiB ($(nproc) cores)"
make_small small "$NSMALL"
make_large large "$NLARGE" "$LMIB"
sync

for set in large small; do
  kib=$(du -sk "$set" | cut -f1)
  echo "== $set files ($((kib / 1024)) MiB)"
  # Each peer's output is deleted right after it is measured, to keep the
  # scratch space (tmpfs, i.e. memory) under 3x the corpus.
  measure "tar -cf" tar -cf "$set.tar" -C "$set" .; tar_s=$SECS
  PREP='rm -rf x; mkdir x' measure "tar -xf" tar -xf "$set.tar" -C x; tx_s=$SECS
  rm -rf x "$set.tar"
  size=$(( (kib * 13 / 10 + 65536) / 1024 ))M
  inodes=$(( $(find "$set" | wc -l) + 1024 ))
  measure "mke2fs -t ext4 -d" mke2fs -q -F -t ext4 -N "$inodes" -d "$set" "$set.ext4" "$size"; e2_s=$SECS
  rm -f "$set.ext4"
  erofs_s=
  if command -v mkfs.erofs >/dev/null; then
    measure "mkfs.erofs" mkfs.erofs --quiet "$set.erofs" "$set"; erofs_s=$SECS
    rm -f "$set.erofs"
  fi
  PREP="rm -f $set.img" measure "mkfs-crypt create" "$MKFS" create "$set.img" --root "$set" --key-file "$KEY" --quiet --force; mk_s=$SECS; mk_rss=$RSS
  PREP='rm -rf x' measure "fsck-crypt extract" "$FSCK" extract "$set.img" x --key-file "$KEY" --no-progress; ex_s=$SECS
  echo "  ratio create/tar-cf     $(ratio "$mk_s" "$tar_s")"
  echo "  ratio create/mke2fs-d   $(ratio "$mk_s" "$e2_s")"
  [ -n "$erofs_s" ] && echo "  ratio create/mkfs.erofs $(ratio "$mk_s" "$erofs_s")"
  echo "  create peak RSS         ${mk_rss} KiB"
  echo "  ratio extract/tar-xf    $(ratio "$ex_s" "$tx_s")"
  diff -r -q "$set" x >/dev/null && echo "  extracted tree identical" || { echo "  EXTRACTED TREE DIFFERS"; exit 1; }
  rm -rf x "$set.img"
done
