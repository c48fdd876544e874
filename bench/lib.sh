# Shared helpers for the bench/*.sh scripts. Source it; do not run it.
# BENCH_DIR: scratch directory (default: a new one under /dev/shm if it has room, else /tmp).
# BENCH_SCALE: small (seconds, for checking the scripts) or full (the recorded figures).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SCALE=${BENCH_SCALE:-full}
if [ -z "${BENCH_DIR:-}" ]; then
  if [ -d /dev/shm ] && [ "$(df --output=avail -k /dev/shm | tail -1)" -gt $((14 * 1024 * 1024)) ]; then
    BENCH_DIR=$(mktemp -d /dev/shm/cryptimg-bench.XXXX)
  else
    BENCH_DIR=$(mktemp -d /tmp/cryptimg-bench.XXXX)
  fi
  trap 'rm -rf "$BENCH_DIR"' EXIT
fi
MKFS=$ROOT/target/release/mkfs-crypt
FSCK=$ROOT/target/release/fsck-crypt
BACKUP=$ROOT/target/release/backup-crypt
KEY=$ROOT/testdata/demo/key

build_release() { (cd "$ROOT" && cargo build --release --quiet); }

ensure_tools() {
  local need=()
  [ -x /usr/bin/time ] || need+=(time)
  command -v mke2fs >/dev/null || need+=(e2fsprogs)
  command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
  if [ ${#need[@]} -gt 0 ]; then
    (apt-get update -qq && apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 || echo "note: could not install ${need[*]}" >&2
  fi
}

# measure NAME CMD... : runs CMD $BENCH_RUNS times (default 3; the shell code in
# $PREP, if set, runs untimed before each run), keeps the fastest, and sets the
# globals SECS (wall seconds) and RSS (peak KiB of that run); prints a line.
measure() {
  local name=$1; shift
  local out runs=${BENCH_RUNS:-3} best= best_rss= s r
  out=$(mktemp)
  for _ in $(seq 1 "$runs"); do
    [ -n "${PREP:-}" ] && eval "$PREP"
    /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null 2>"$out.err" || { cat "$out.err" >&2; rm -f "$out" "$out.err"; return 1; }
    read -r s r < "$out"
    if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; best_rss=$r; fi
  done
  rm -f "$out" "$out.err"
  SECS=$best; RSS=$best_rss
  printf '  %-40s %8.2f s  %8d KiB peak RSS  (best of %d)\n' "$name" "$SECS" "$RSS" "$runs"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# make_small DIR N : N small files (0..16 KiB, pseudo-random content) in a 3-level tree.
make_small() {
  python3 - "$1" "$2" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
r = random.Random(42)
blob = os.urandom(1 << 20)
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}", f"e{(i // 100) % 10}")
    os.makedirs(d, exist_ok=True)
    size = r.choice([0, 100, 700, 1500, 4000, 4096, 9000, 16384])
    off = r.randrange(0, len(blob) - size) if size else 0
    with open(os.path.join(d, f"file-{i:06d}.dat"), "wb") as f:
        f.write(blob[off:off + size])
PY
}

# make_large DIR COUNT MIB : COUNT files of MIB MiB of random data.
make_large() {
  mkdir -p "$1"
  for i in $(seq 1 "$2"); do head -c "$(($3 << 20))" /dev/urandom > "$1/large-$i.bin"; done
}
