#!/usr/bin/env bash
# Benchmark of `fsck-crypt check` (issue 3).
#
#  1. metadata check of an image of N small files (default 100,000) against
#     `e2fsck -fn` on an ext4 image of the same tree (`mke2fs -t ext4 -d`),
#     wall time (best of 3, warm cache) and peak RSS (/usr/bin/time -v);
#  2. `--data` scrub throughput on a warm cache (target >= 2 GB/s) of an image
#     of large files, against `cksum` (GNU, hardware crc) reading the same image.
#
# Environment:
#   BENCH_DIR     work directory (default: a fresh mktemp -d, removed at exit)
#   BENCH_SCALE   `small` for a quick run (2,000 files, 256 MiB of data)
#   BENCH_FILES   number of small files (default 100000)
#   BENCH_DATA_MB MiB of file data in the scrub image (default 2048)
#
# Prints one line per measurement:
#   <what>: fsck-crypt <value> | <peer> <value> | ratio <peer/fsck-crypt or fsck-crypt/peer>
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=${BENCH_FILES:-100000}
DATA_MB=${BENCH_DATA_MB:-2048}
if [[ "${BENCH_SCALE:-}" == "small" ]]; then
	FILES=${BENCH_FILES:-2000}
	DATA_MB=${BENCH_DATA_MB:-256}
fi

if [[ -n "${BENCH_DIR:-}" ]]; then
	WORK=$BENCH_DIR
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d)
	trap 'rm -rf "$WORK"' EXIT
fi

need_apt=()
[[ -x /usr/bin/time ]] || need_apt+=(time)
command -v mke2fs >/dev/null && command -v e2fsck >/dev/null || need_apt+=(e2fsprogs)
if ((${#need_apt[@]})); then
	echo "installing ${need_apt[*]}" >&2
	apt-get update -qq >&2 && apt-get install -y -qq "${need_apt[@]}" >&2
fi
PATH=$PATH:/usr/sbin:/sbin

echo "building release binaries" >&2
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p fsck-crypt -p mkfs-crypt
FSCK=$ROOT/target/release/fsck-crypt
MKFS=$ROOT/target/release/mkfs-crypt

KEY=$WORK/bench.key
[[ -f $KEY ]] || "$MKFS" keygen "$KEY" >/dev/null

# ---- corpus 1: N small files in directories of 500 -------------------------
TREE=$WORK/tree
if [[ ! -f $WORK/tree.done ]]; then
	echo "making $FILES files under $TREE" >&2
	rm -rf "$TREE"
	python3 - "$TREE" "$FILES" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 500 // 100), "e%03d" % (i // 500 % 100))
    if i % 500 == 0:
        os.makedirs(d, exist_ok=True)
    size = rnd.choice([0, 100, 700, 3000, 5000, 12000])
    with open(os.path.join(d, "file-%06d.txt" % i), "wb") as f:
        f.write(rnd.randbytes(size))
PY
	touch "$WORK/tree.done"
fi

IMG=$WORK/small.img
EXT4=$WORK/small.ext4
"$MKFS" create "$IMG" --root "$TREE" --key-file "$KEY" --force --quiet
tree_kb=$(du -sk "$TREE" | cut -f1)
ext4_mb=$(((tree_kb * 3 / 2 + FILES * 4) / 1024 + 64))
rm -f "$EXT4"
mke2fs -q -F -t ext4 -N $((FILES + FILES / 10 + 1000)) -d "$TREE" "$EXT4" "${ext4_mb}M" >/dev/null

# Best-of-3 wall seconds and the largest peak RSS (KiB) of a command, which
# must exit 0 (e2fsck -n does on a clean file system).
measure() {
	local best="" rss=0 t r out
	out=$WORK/time.out
	for _ in 1 2 3; do
		local t0 t1
		t0=$(date +%s.%N)
		/usr/bin/time -v -o "$out" "$@" >/dev/null 2>&1 || { echo "command failed: $*" >&2; cat "$out" >&2; exit 1; }
		t1=$(date +%s.%N)
		t=$(awk -v a="$t0" -v b="$t1" 'BEGIN{ printf "%.4f", b - a }')
		r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out")
		if [[ -z $best ]] || awk -v a="$t" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$t; fi
		((r > rss)) && rss=$r
	done
	echo "$best $rss"
}

cat "$IMG" "$EXT4" >/dev/null # warm the page cache
read -r f_t f_rss < <(measure "$FSCK" check "$IMG" --no-progress)
read -r e_t e_rss < <(measure e2fsck -fn "$EXT4")
ratio=$(awk -v a="$e_t" -v b="$f_t" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "inf" }')
echo "metadata check, $FILES files: fsck-crypt ${f_t}s | e2fsck -fn ${e_t}s | e2fsck/fsck-crypt time ratio ${ratio}x"
rss_ratio=$(awk -v a="$f_rss" -v b="$e_rss" 'BEGIN{ printf "%.2f", a/b }')
echo "peak RSS, metadata check: fsck-crypt ${f_rss} KiB | e2fsck -fn ${e_rss} KiB | fsck-crypt/e2fsck ratio ${rss_ratio}"
read -r k_t k_rss < <(measure "$FSCK" check "$IMG" --no-progress --key-file "$KEY")
ratio=$(awk -v a="$e_t" -v b="$k_t" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "inf" }')
echo "keyed check (names, links), $FILES files: fsck-crypt ${k_t}s, ${k_rss} KiB | e2fsck -fn ${e_t}s | e2fsck/fsck-crypt time ratio ${ratio}x"

# ---- corpus 2: large files for the data scrub ------------------------------
BIG=$WORK/big
if [[ ! -f $WORK/big.done.$DATA_MB ]]; then
	echo "making ${DATA_MB} MiB of file data under $BIG" >&2
	rm -rf "$BIG"
	mkdir -p "$BIG"
	per=64
	n=$(((DATA_MB + per - 1) / per))
	for ((i = 0; i < n; i++)); do
		head -c $((per << 20)) /dev/urandom >"$BIG/f$i"
	done
	touch "$WORK/big.done.$DATA_MB"
fi
BIMG=$WORK/big.img
"$MKFS" create "$BIMG" --root "$BIG" --key-file "$KEY" --force --quiet
bytes=$(stat -c %s "$BIMG")
cat "$BIMG" >/dev/null
cat "$BIMG" >/dev/null
read -r s_t s_rss < <(measure "$FSCK" check "$BIMG" --data --no-progress)
read -r c_t c_rss < <(measure cksum "$BIMG")
gbs=$(awk -v b="$bytes" -v t="$s_t" 'BEGIN{ if (t > 0) printf "%.2f", b/t/1e9; else print "inf" }')
cgbs=$(awk -v b="$bytes" -v t="$c_t" 'BEGIN{ if (t > 0) printf "%.2f", b/t/1e9; else print "inf" }')
ratio=$(awk -v a="$c_t" -v b="$s_t" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "inf" }')
echo "data scrub (--data, warm cache), $((bytes >> 20)) MiB image: fsck-crypt ${gbs} GB/s (${s_t}s, ${s_rss} KiB) | cksum ${cgbs} GB/s (${c_t}s, ${c_rss} KiB) | cksum/fsck-crypt time ratio ${ratio}x (target >= 2 GB/s)"
