#!/usr/bin/env bash
# Lifecycle benchmarks (issue 5):
#   1. `snapshot` of a 100k-file image (target < 1 s); ratio to `create` of the same tree.
#   2. lazy `rekey` on two images with the same file count and 10x different data:
#      the time ratio large/small should stay near 1 (metadata-bound), far below 10.
#   3. `rekey --reencrypt` throughput vs `create` throughput on the same data (target >= 0.70).
#
# Usage: bench/lifecycle.sh            full corpus (~100k files, ~1.5 GiB of data)
#        BENCH_SCALE=small bench/lifecycle.sh   quick check (~2k files, ~80 MiB)
#        BENCH_DIR=/path  where to build the corpus (default: a fresh mktemp -d, removed at exit)
#        BENCH_REPEAT=N   runs per throughput measurement, best kept (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCALE=${BENCH_SCALE:-full}
REPEAT=${BENCH_REPEAT:-3}
case "$SCALE" in
small)
    SNAP_FILES=2000 # files in the snapshot image
    RK_FILES=1000   # files in each rekey image
    RK_SMALL_KB=4   # file size in the small rekey image (the large one: 10x)
    BIG_MB=64       # data of the throughput image (in 4 files)
    ;;
full)
    SNAP_FILES=100000
    RK_FILES=20000
    RK_SMALL_KB=4
    BIG_MB=1024
    ;;
*)
    echo "BENCH_SCALE must be small or full" >&2
    exit 16
    ;;
esac

if [[ -n "${BENCH_DIR:-}" ]]; then
    WORK=$BENCH_DIR/lifecycle
    rm -rf "$WORK"
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi

cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p mkfs-crypt
MKFS=$ROOT/target/release/mkfs-crypt

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
mibs() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", (t > 0 ? n / t / 1048576 : 0) }'; }
# A tree of $2 random files of $3 bytes each, in 100 directories.
make_tree() {
    local dir=$1 n=$2 size=$3 per d
    per=$(((n + 99) / 100))
    for ((d = 0; d < 100 && d * per < n; d++)); do
        local count=$((n - d * per < per ? n - d * per : per))
        mkdir -p "$dir/d$d"
        head -c $((count * size)) /dev/urandom | split -b "$size" -a 5 - "$dir/d$d/f"
    done
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a ? b : a) }'; }
# Runs mkfs-crypt quietly and prints the seconds it took (after flushing
# earlier writes, so they are not charged to it).
timed() {
    local t0 t1
    sync
    t0=$(now)
    "$MKFS" "$@" >/dev/null
    t1=$(now)
    elapsed "$t0" "$t1"
}

"$MKFS" keygen "$WORK/A" >/dev/null
"$MKFS" keygen "$WORK/B" >/dev/null

# 1. snapshot of a many-file image.
make_tree "$WORK/t-snap" "$SNAP_FILES" 1024
t_create=$(timed create "$WORK/snap.img" --root "$WORK/t-snap" --key-file "$WORK/A" -q)
t_snap=$(timed snapshot "$WORK/snap.img" --from main --name user -q)
echo "snapshot_${SNAP_FILES}_files seconds=$t_snap create_seconds=$t_create ratio_to_create=$(ratio "$t_snap" "$t_create") (target < 1 s)"
rm -rf "$WORK/t-snap" "$WORK/snap.img"

# 2. lazy rekey: same file count, 10x the data.
declare -A t_rk bytes_rk
for kind in small large; do
    kb=$RK_SMALL_KB
    [[ $kind == large ]] && kb=$((RK_SMALL_KB * 10))
    make_tree "$WORK/t-$kind" "$RK_FILES" $((kb * 1024))
    bytes_rk[$kind]=$((RK_FILES * kb * 1024))
    "$MKFS" create "$WORK/$kind.img" --root "$WORK/t-$kind" --key-file "$WORK/A" -q
    rm -rf "$WORK/t-$kind"
    "$MKFS" snapshot "$WORK/$kind.img" --from main --name user -q
    t_rk[$kind]=$(timed rekey "$WORK/$kind.img" --snapshot user --old-key-file "$WORK/A" --new-key-file "$WORK/B" -q)
    echo "rekey_lazy_${kind} files=$RK_FILES data_bytes=${bytes_rk[$kind]} seconds=${t_rk[$kind]}"
done
echo "rekey_lazy_scaling data_ratio=10 time_ratio_large_to_small=$(ratio "${t_rk[large]}" "${t_rk[small]}") (metadata-bound: near 1, far below 10)"

# 3. --reencrypt throughput vs create, on large files and on the many-file image.
mkdir -p "$WORK/t-big"
for i in 1 2 3 4; do
    head -c $((BIG_MB * 1024 * 1024 / 4)) /dev/urandom >"$WORK/t-big/f$i"
done
big_bytes=$((BIG_MB * 1024 * 1024))
cat "$WORK"/t-big/* >/dev/null # source in the page cache, as the image will be
t_c="" t_r=""
for ((i = 0; i < REPEAT; i++)); do
    rm -f "$WORK/big.img"
    t_c=$(min "$t_c" "$(timed create "$WORK/big.img" --root "$WORK/t-big" --key-file "$WORK/A" -q)")
    "$MKFS" snapshot "$WORK/big.img" --from main --name user -q
    t_r=$(min "$t_r" "$(timed rekey "$WORK/big.img" --snapshot user --old-key-file "$WORK/A" --new-key-file "$WORK/B" --reencrypt -q)")
done
c_mbs=$(mibs "$big_bytes" "$t_c")
r_mbs=$(mibs "$big_bytes" "$t_r")
echo "reencrypt_large_files data_bytes=$big_bytes best_of=$REPEAT create_MiB_s=$c_mbs reencrypt_MiB_s=$r_mbs ratio_to_create=$(ratio "$r_mbs" "$c_mbs") (target >= 0.70)"
rm -rf "$WORK/t-big" "$WORK/big.img"

# The large many-file image from step 2 (already lazily rekeyed): create time of the same data for reference.
make_tree "$WORK/t-large" "$RK_FILES" $((RK_SMALL_KB * 10 * 1024))
t_c=$(timed create "$WORK/large2.img" --root "$WORK/t-large" --key-file "$WORK/A" -q)
t_r=$(timed rekey "$WORK/large.img" --snapshot user --old-key-file "$WORK/A" --new-key-file "$WORK/B" --reencrypt -q)
c_mbs=$(mibs "${bytes_rk[large]}" "$t_c")
r_mbs=$(mibs "${bytes_rk[large]}" "$t_r")
echo "reencrypt_${RK_FILES}_files data_bytes=${bytes_rk[large]} create_MiB_s=$c_mbs reencrypt_MiB_s=$r_mbs ratio_to_create=$(ratio "$r_mbs" "$c_mbs") (target >= 0.70)"
