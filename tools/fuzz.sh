#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a fixed wall-clock time each.
#
#   tools/fuzz.sh [MINUTES] [TARGET...]
#
# MINUTES defaults to 10; TARGET defaults to all six targets (superblock,
# metadata, image_open, tar_import, backup_archive, ext4_archive), run one
# after another.
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The default build uses
# AddressSanitizer, for which cargo-fuzz passes -Zsanitizer to rustc: on a
# stable toolchain the script therefore sets RUSTC_BOOTSTRAP=1.
# FUZZ_SANITIZER=none builds without a sanitizer and then needs no -Z flag
# (cargo-fuzz 0.13 adds -Z flags only for sanitizers, build-std and careful).
# Seeds come from testdata/ (images, hostile archives, the demo tree as tar);
# the corpus grows in fuzz/corpus/TARGET (not committed). A crash leaves its
# input in fuzz/artifacts/TARGET and makes the script exit non-zero. The last
# libFuzzer status line of each run is appended to fuzz/runs.log.
# FUZZ_TARGET_DIR, when set, is passed to cargo-fuzz as --target-dir.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
minutes="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(superblock metadata image_open tar_import backup_archive ext4_archive)
fi
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2; exit 2; }
if [ "${FUZZ_SANITIZER:-address}" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

seed() {
    local t="$1" dir="$root/fuzz/corpus/$1"
    mkdir -p "$dir"
    [ -n "$(ls -A "$dir")" ] && return 0
    case "$t" in
    superblock | metadata | image_open)
        python3 - "$t" "$dir" "$root"/testdata/fsck/*.img <<'PY'
import struct, sys, os
t, out, imgs = sys.argv[1], sys.argv[2], sys.argv[3:]
B = 4096
for i, p in enumerate(imgs):
    data = open(p, 'rb').read()
    name = os.path.basename(p)
    if t == 'image_open':
        open(f"{out}/{name}", 'wb').write(b'\0' + data)
        open(f"{out}/{name}.fixcrc", 'wb').write(b'\1' + data)
        continue
    for slot in (0, 1):
        blk = data[slot * B:(slot + 1) * B]
        if len(blk) < B:
            continue
        if t == 'superblock':
            open(f"{out}/{name}.slot{slot}", 'wb').write(bytes([slot]) + blk)
            open(f"{out}/{name}.slot{slot}.fixcrc", 'wb').write(bytes([slot | 2]) + blk)
            continue
        if blk[:8] != b'CRYPTIMG':
            continue
        gen, = struct.unpack_from('<Q', blk, 16)
        start, nblk, nbytes = struct.unpack_from('<QQQ', blk, 80)
        region = data[start * B:(start + nblk) * B]
        if nblk > 64 or len(region) != nblk * B:
            continue
        stream = b''.join(region[j * B + 16:(j + 1) * B] for j in range(nblk))[:nbytes]
        open(f"{out}/{name}.slot{slot}.stream", 'wb').write(b'\0' + stream)
        open(f"{out}/{name}.slot{slot}.framed", 'wb').write(b'\1' + struct.pack('<QQ', start, gen) + region)
        open(f"{out}/{name}.slot{slot}.framed.fixcrc", 'wb').write(b'\3' + struct.pack('<QQ', start, gen) + region)
PY
        ;;
    tar_import)
        tar -C "$root/testdata/demo" --format=pax -cf "$dir/demo-pax.tar" tree
        tar -C "$root/testdata/demo" --format=gnu -cf "$dir/demo-gnu.tar" tree
        tar -C "$root/testdata/demo" --format=ustar -cf "$dir/demo-ustar.tar" tree
        ;;
    backup_archive)
        cp "$root"/testdata/backup/hostile/*.tar "$root"/testdata/backup/v1/*.tar "$dir/"
        ;;
    ext4_archive)
        cp "$root"/testdata/backup/hostile-ext4/*.tar "$dir/"
        ;;
    esac
}

max_len() {
    case "$1" in
    superblock) echo 4097 ;;
    tar_import | backup_archive | ext4_archive) echo 65536 ;;
    image_open) echo 65537 ;;
    *) echo 65552 ;;
    esac
}

status=0
cd "$root"
for t in "${targets[@]}"; do
    seed "$t"
    log="$root/fuzz/$t.log"
    echo "fuzz.sh: $t for $minutes min (log $log)"
    start=$(date +%s)
    rc=0
    cargo fuzz run --fuzz-dir "$root/fuzz" ${FUZZ_TARGET_DIR:+--target-dir "$FUZZ_TARGET_DIR"} \
        ${FUZZ_SANITIZER:+--sanitizer "$FUZZ_SANITIZER"} "$t" "$root/fuzz/corpus/$t" -- \
        -max_total_time=$((minutes * 60)) -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    end=$(date +%s)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    fuzzed=$(grep -E '^Done [0-9]+ runs in' "$log" | tail -1 || true)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    crashes=$(find "$root/fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
    echo "$(date -u +%FT%TZ) $t rc=$rc wall_secs=$((end - start)) execs=${execs:-?} artifacts=$crashes ${fuzzed:+[$fuzzed]} last: $last" |
        tee -a "$root/fuzz/runs.log"
    [ "$rc" -eq 0 ] || status=1
done
exit $status
