#!/usr/bin/env bash
# Benchmark of backup-crypt against GNU tar on equally sized data.
#
#   create : `backup-crypt create IMG -o OUT`  vs  `tar -cf OUT -C TREE .`
#   restore: `backup-crypt restore OUT NEW.img` vs  `tar -xf OUT -C DIR`
#
# The plain tree and the image hold the same files; the image is made from the
# tree with mkfs-crypt. Each measurement is the best of $BENCH_RUNS runs, with
# the page cache warm (both tools read the same amount of data).
#
# Environment:
#   BENCH_SCALE=small|medium|large   corpus size (default medium: ~1 GiB)
#   BENCH_DIR=DIR                    work directory (default: mktemp -d)
#   BENCH_RUNS=N                     runs per measurement (default 3)
#
# Output: one line per measurement with the ratio to tar (target: create
# <= 1.2x, restore <= 1.3x).
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --release -q -p backup-crypt -p mkfs-crypt
BIN=$PWD/target/release

SCALE=${BENCH_SCALE:-medium}
RUNS=${BENCH_RUNS:-3}
case "$SCALE" in
  small) BIG=4; BIGMB=8; SMALL=200; SMALLKB=16 ;;
  medium) BIG=8; BIGMB=96; SMALL=4000; SMALLKB=64 ;;
  large) BIG=16; BIGMB=256; SMALL=20000; SMALLKB=64 ;;
  *) echo "BENCH_SCALE must be small, medium or large" >&2; exit 16 ;;
esac

WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
cleanup() { if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

TREE=$WORK/tree
rm -rf "$TREE" && mkdir -p "$TREE/big" "$TREE/small"
for i in $(seq 1 "$BIG"); do
  head -c $((BIGMB * 1024 * 1024)) /dev/urandom > "$TREE/big/f$i"
done
for i in $(seq 1 "$SMALL"); do
  d=$TREE/small/d$((i % 50))
  mkdir -p "$d"
  head -c $((SMALLKB * 1024)) /dev/urandom > "$d/f$i"
done
BYTES=$(du -sb "$TREE" | cut -f1)

head -c 64 /dev/urandom > "$WORK/key"
rm -f "$WORK/img"
"$BIN/mkfs-crypt" create "$WORK/img" --root "$TREE" --key-file "$WORK/key" --quiet

# best-of-N wall time in seconds of a command (run through bash -c)
best() {
  local best=""
  for _ in $(seq 1 "$RUNS"); do
    local s e t
    s=$(date +%s.%N)
    bash -c "$1" >/dev/null
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  echo "$best"
}

line() { # name ours theirs
  printf '%-8s %s: %.3f s (%.0f MB/s)  tar: %.3f s  ratio %.2fx\n' "$1" "$SCALE $((BYTES / 1048576)) MiB" "$2" \
    "$(echo "$BYTES / $2 / 1048576" | bc -l)" "$3" "$(echo "$2 / $3" | bc -l)"
}

# Warm the cache for both inputs.
cat "$WORK/img" > /dev/null
tar -cf /dev/null -C "$TREE" .

T_OURS=$(best "rm -f '$WORK/b.tar'; '$BIN/backup-crypt' create '$WORK/img' -o '$WORK/b.tar' --quiet")
T_TAR=$(best "rm -f '$WORK/p.tar'; tar -cf '$WORK/p.tar' -C '$TREE' .")
line create "$T_OURS" "$T_TAR"

T_OURS=$(best "rm -f '$WORK/r.img'; '$BIN/backup-crypt' restore '$WORK/b.tar' '$WORK/r.img' --quiet")
T_TAR=$(best "rm -rf '$WORK/x'; mkdir '$WORK/x'; tar -xf '$WORK/p.tar' -C '$WORK/x'")
line restore "$T_OURS" "$T_TAR"

"$BIN/backup-crypt" verify "$WORK/b.tar" > /dev/null
