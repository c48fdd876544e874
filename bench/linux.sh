#!/usr/bin/env bash
# Issue 12 benchmark: a real tree of many small files (the Linux 6.1 sources,
# ~78k files, 1.3 GB, installed by bench/corpus-linux.sh), every pair measured
# INTERLEAVED (ours, peer, ours, peer, ...) and quoted as the median, all ratios
# from one run:
#   backup-crypt create IMG -o OUT       vs  tar -cf OUT -C TREE .        (warm, tmpfs)
#   mkfs-crypt create IMG --root TREE    vs  mkfs.erofs OUT TREE          (warm, tmpfs)
#   mkfs-crypt create, synced            vs  mke2fs -t ext4 -d TREE, synced (output on disk, + sync -f)
#   fsck-crypt check IMG (keyless)       vs  e2fsck -fn EXT4 of the same tree
#   mkfs-crypt create --format ext4      vs  mke2fs -t ext4 -d TREE (warm, tmpfs)  (issue 9)
#   the same on one 1 GiB random file    vs  tar -cf                              (issue 9)
#   backup-crypt create/restore of a kernel-made encrypted ext4 image
#                                        vs  tar -cf / tar -xf; fsck-crypt check
#                                            of it vs e2fsck -fn                    (issue 10; root, loop)
#   restore --base of an incremental archive of it (nothing changed) vs tar -xf   (issue 10, for scale)
# Environment:
#   BENCH_CORPUS_DIR  the tree (default /work/corpus/linux-6.1; created if missing)
#   BENCH_DIR         tmpfs scratch (default: a new dir under /dev/shm, removed at exit)
#   BENCH_DISK_DIR    on-disk scratch for the synced pair (default: a new dir under $ROOT/target)
#   BENCH_PAIRS       interleaved pairs per comparison (default 5; 1 with BENCH_SCALE=small)
#   BENCH_ONLY        space-separated subset of: backup erofs ext4 fsck ext4fmt ext4backup (default all)
#   BENCH_BIN_DIR     take our binaries from here instead (e.g. an older build, for "before")
#   BENCH_RT          set (root): the ext4fmt pairs run at SCHED_FIFO 10 (chrt), for a shared machine
source "$(dirname "$0")/lib.sh"
build_release
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  MKFS=$BENCH_BIN_DIR/mkfs-crypt; FSCK=$BENCH_BIN_DIR/fsck-crypt; BACKUP=$BENCH_BIN_DIR/backup-crypt
  echo "binaries from $BENCH_BIN_DIR"
fi
ensure_tools
PATH=$PATH:/usr/sbin:/sbin
TREE=$(bash "$ROOT/bench/corpus-linux.sh")
if [ "$BENCH_SCALE" = small ]; then PAIRS=${BENCH_PAIRS:-1}; else PAIRS=${BENCH_PAIRS:-5}; fi
ONLY=${BENCH_ONLY:-backup erofs ext4 fsck ext4fmt ext4backup}
DISK=${BENCH_DISK_DIR:-}
if [ -z "$DISK" ]; then
  DISK=$(mktemp -d "$ROOT/target/cryptimg-bench-disk.XXXX")
  old_trap=$(trap -p EXIT | sed "s/^trap -- '\(.*\)' EXIT\$/\1/")
  trap "rm -rf '$DISK'; $old_trap" EXIT
fi
mkdir -p "$DISK"
cd "$BENCH_DIR"
files=$(find "$TREE" -type f | wc -l)
dirs=$(find "$TREE" -type d | wc -l)
kib=$(du -sk "$TREE" | cut -f1)
echo "corpus $TREE: $files files, $dirs directories, $((kib / 1024)) MiB; $PAIRS interleaved pairs each; $(nproc) cores"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
tar -cf /dev/null -C "$TREE" . # warm the page cache

# now_ns; elapsed seconds since T0 (ns) with millisecond resolution.
secs_since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
# run1 PREP CMD: runs PREP untimed, then CMD timed (stdout/err discarded); prints
# "wall cpu" seconds (cpu = user + sys of CMD and its children, 10 ms resolution).
run1() {
  eval "$1"
  local t0 w; t0=$(date +%s%N)
  /usr/bin/time -f '%U %S' -o "$BENCH_DIR/cpu" bash -c "$2" >/dev/null 2>"$BENCH_DIR/err" || { echo "FAILED: $2" >&2; cat "$BENCH_DIR/err" >&2; return 1; }
  w=$(secs_since "$t0")
  echo "$w $(awk '{ printf "%.2f", $1 + $2 }' "$BENCH_DIR/cpu")"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# pair NAME OURS_PREP OURS PEER_NAME PEER_PREP PEER: interleaved runs (ours first),
# medians of wall and of cpu time, and their ratios.
pair() {
  local name=$1 op=$2 oc=$3 pname=$4 pp=$5 pc=$6 o=() p=() oc_=() pc_=() i w c
  for i in $(seq 1 "$PAIRS"); do
    read -r w c < <(run1 "$op" "$oc"); o+=("$w"); oc_+=("$c")
    read -r w c < <(run1 "$pp" "$pc"); p+=("$w"); pc_+=("$c")
  done
  local om pm ocm pcm
  om=$(median "${o[@]}"); pm=$(median "${p[@]}"); ocm=$(median "${oc_[@]}"); pcm=$(median "${pc_[@]}")
  printf '  %-26s wall median %7.3f s (runs: %s); cpu median %6.2f s\n' "$name" "$om" "${o[*]}" "$ocm"
  printf '  %-26s wall median %7.3f s (runs: %s); cpu median %6.2f s\n' "$pname" "$pm" "${p[*]}" "$pcm"
  printf '  => %s / %s: wall ratio %s, cpu ratio %s   (load %s)\n' "$name" "$pname" "$(ratio "$om" "$pm")" "$(ratio "$ocm" "$pcm")" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
has() { [[ " $ONLY " == *" $1 "* ]]; }

# The tools warn about a key file others can read; the bench's copy is private.
install -m 600 "$KEY" "$BENCH_DIR/bench.key"
KEY=$BENCH_DIR/bench.key
IMG=$BENCH_DIR/linux.img
"$MKFS" create "$IMG" --root "$TREE" --key-file "$KEY" --quiet --force
echo "image: $(($(stat -c %s "$IMG") >> 20)) MiB"

if has backup; then
  echo "== backup-crypt create vs tar -cf (warm cache, output on tmpfs)"
  pair "backup-crypt create" "rm -f b.tar" "'$BACKUP' create '$IMG' -o b.tar --quiet" \
    "tar -cf" "rm -f p.tar" "tar -cf p.tar -C '$TREE' ."
  "$BACKUP" verify b.tar >/dev/null && echo "  backup verifies"
  rm -f b.tar p.tar
fi
if has erofs; then
  echo "== mkfs-crypt create vs mkfs.erofs (warm cache, output on tmpfs)"
  pair "mkfs-crypt create" "rm -f c.img" "'$MKFS' create c.img --root '$TREE' --key-file '$KEY' --quiet --force" \
    "mkfs.erofs" "rm -f p.erofs" "mkfs.erofs --quiet p.erofs '$TREE'"
  rm -f c.img p.erofs
fi
size=$(((kib * 13 / 10 + 65536) / 1024))M
inodes=$((files + dirs + 1024))
if has ext4; then
  echo "== mkfs-crypt create vs mke2fs -t ext4 -d (output on disk: $DISK, each followed by sync -f)"
  pair "mkfs-crypt create + sync" "rm -f '$DISK/c.img'; sync" "'$MKFS' create '$DISK/c.img' --root '$TREE' --key-file '$KEY' --quiet --force && sync -f '$DISK/c.img'" \
    "mke2fs -d + sync" "rm -f '$DISK/p.ext4'; sync" "mke2fs -q -F -t ext4 -N $inodes -d '$TREE' '$DISK/p.ext4' $size && sync -f '$DISK/p.ext4'"
  rm -f "$DISK/c.img" "$DISK/p.ext4"
fi
if has fsck; then
  echo "== fsck-crypt check (keyless) vs e2fsck -fn (same tree, warm cache)"
  mke2fs -q -F -t ext4 -N "$inodes" -d "$TREE" p.ext4 "$size" >/dev/null
  cat "$IMG" p.ext4 >/dev/null
  pair "fsck-crypt check" ":" "'$FSCK' check '$IMG' --no-progress" "e2fsck -fn" ":" "e2fsck -fn p.ext4"
  rm -f p.ext4
fi
if has ext4fmt; then
  # BENCH_RT=1: both sides of these pairs run at SCHED_FIFO priority 10 (root), so
  # that other jobs on a shared machine do not decide the wall times.
  RT=""; [ -n "${BENCH_RT:-}" ] && RT="chrt -f 10 " && echo "(ext4fmt pairs at SCHED_FIFO 10: BENCH_RT=$BENCH_RT)"
  # verdict TARGET: the wall ratio of the pair output in $BENCH_DIR/pair.out against TARGET.
  verdict() {
    awk -v t="$1" '/=> .*wall ratio/ { r = $0; sub(/.*wall ratio /, "", r); sub(/,.*/, "", r)
      printf "  RESULT: wall ratio %s, target <= %s: %s\n", r, t, (r + 0 <= t + 0) ? "MET" : "NOT MET" }' "$BENCH_DIR/pair.out"
  }
  echo "== mkfs-crypt create --format ext4 vs mke2fs -t ext4 -d (warm cache, output on tmpfs)"
  pair "create --format ext4" "rm -f e.img" "$RT'$MKFS' create e.img --format ext4 --root '$TREE' --key-file '$KEY' --size $size --quiet --force" \
    "mke2fs -d" "rm -f p.ext4" "$RT""mke2fs -q -F -t ext4 -N $inodes -d '$TREE' p.ext4 $size" | tee "$BENCH_DIR/pair.out"
  verdict 1.0
  rm -f e.img p.ext4
  echo "== mkfs-crypt create --format ext4 vs tar -cf, one 1 GiB random file (warm cache, tmpfs)"
  mkdir -p large && head -c $((1 << 30)) /dev/urandom > large/big.bin
  cat large/big.bin > /dev/null
  pair "create --format ext4" "rm -f e.img" "$RT'$MKFS' create e.img --format ext4 --root large --key-file '$KEY' --quiet --force" \
    "tar -cf" "rm -f p.tar" "$RT""tar -cf p.tar -C large ." | tee "$BENCH_DIR/pair.out"
  verdict 1.3
  for n in 1 3; do
    head -c $((n << 30)) /dev/urandom > large/big.bin
    /usr/bin/time -f '%M' -o rss "$MKFS" create e.img --format ext4 --root large --key-file "$KEY" --quiet --force
    echo "  peak RSS of create --format ext4, one ${n} GiB file: $(cat rss) KiB"
  done
  rm -rf large e.img p.tar rss
fi
if has ext4backup; then
  if [ "$(id -u)" != 0 ]; then
    echo "== ext4 backup: skipped (needs root for a loop mount)"
  else
    echo "== backup-crypt on a kernel-made encrypted ext4 image (the tree copied in through the kernel)"
    python3 - "$KEY" > raw.key <<'PY'
import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())
PY
    truncate -s $(((kib * 2 + 262144) / 1024))M k.ext4
    mkfs.ext4 -q -F -b 4096 -I 256 -O encrypt k.ext4
    mkdir -p mnt && mount -o loop k.ext4 mnt
    # Add the key and set a v2 policy through the kernel (python3 fcntl: no tool for it ships here).
    python3 - mnt raw.key <<'PY'
import fcntl, os, struct, sys
mnt, key = sys.argv[1], open(sys.argv[2], 'rb').read()
fd = os.open(mnt, os.O_RDONLY)
# fscrypt_add_key_arg: key_spec {type = IDENTIFIER (2), reserved, u[32]}, raw_size, key_id, reserved[8], raw
arg = bytearray(struct.pack('<II32s', 2, 0, b'') + struct.pack('<II', len(key), 0) + b'\0' * 32 + key)
fcntl.ioctl(fd, 0xc0506617, arg)  # FS_IOC_ADD_ENCRYPTION_KEY
kid = bytes(arg[8:24])
os.mkdir(os.path.join(mnt, 'enc'))
d = os.open(os.path.join(mnt, 'enc'), os.O_RDONLY)
fcntl.ioctl(d, 0x800c6613, struct.pack('<BBBBB3s16s', 2, 1, 4, 3, 0, b'', kid))  # FS_IOC_SET_ENCRYPTION_POLICY v2
PY
    cp -a "$TREE/." mnt/enc/
    umount mnt
    cat k.ext4 > /dev/null
    pair "backup-crypt create (ext4)" "rm -f kb.tar" "'$BACKUP' create k.ext4 -o kb.tar --quiet --force" \
      "tar -cf" "rm -f p.tar" "tar -cf p.tar -C '$TREE' ."
    pair "backup-crypt restore (ext4)" "rm -f kr.img" "'$BACKUP' restore kb.tar kr.img --quiet" \
      "tar -xf" "rm -rf px; mkdir px" "tar -xf p.tar -C px"
    e2fsck -fn kr.img >/dev/null && echo "  restored image: e2fsck -fn clean"
    # Incremental: nothing changed, so every file's data is read from the base
    # (which restore first reads and verifies in full). No target; for scale.
    "$BACKUP" create k.ext4 -o ki.tar --since kb.tar --quiet
    echo "  incremental archive: $(($(stat -c %s ki.tar) >> 20)) MiB (full: $(($(stat -c %s kb.tar) >> 20)) MiB)"
    pair "restore --base (ext4 incr)" "rm -f kr.img" "'$BACKUP' restore ki.tar kr.img --base kb.tar --quiet" \
      "tar -xf" "rm -rf px; mkdir px" "tar -xf p.tar -C px"
    e2fsck -fn kr.img >/dev/null && echo "  restored image (incremental): e2fsck -fn clean"
    pair "fsck-crypt check (ext4)" ":" "'$FSCK' check k.ext4 --no-progress" "e2fsck -fn" ":" "e2fsck -fn k.ext4"
    rm -rf k.ext4 kb.tar ki.tar kr.img p.tar px mnt raw.key
  fi
fi
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
