#!/usr/bin/env bash
# Two builds' `backup-crypt restore` of one ext4 backup, and `tar -xf` of the
# same tree, interleaved (old, new, tar; N rounds), medians of wall and of
# user+sys CPU. For judging a restore change on a loaded machine, where the
# CPU medians move less than the wall ones.
#   OLD, NEW   backup-crypt binaries
#   ARCHIVE    an ext4 backup (e.g. the kb.tar bench/linux.sh makes; keep BENCH_DIR)
#   TARBALL    tar of the same tree (p.tar there)
#   DIR        tmpfs scratch (default /dev/shm/ext4-restore-pairs)
#   N          rounds (default 9)
# Example: OLD=old/backup-crypt NEW=target/release/backup-crypt ARCHIVE=kb.tar TARBALL=p.tar bash bench/ext4-restore-pairs.sh
set -euo pipefail
OLD=$(realpath "${OLD:?}"); NEW=$(realpath "${NEW:?}")
ARCHIVE=$(realpath "${ARCHIVE:?}"); TARBALL=$(realpath "${TARBALL:?}")
DIR=${DIR:-/dev/shm/ext4-restore-pairs}; N=${N:-9}
mkdir -p "$DIR"; trap 'rm -rf "$DIR"' EXIT
cd "$DIR"
declare -A W C
run() {
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  /usr/bin/time -f '%U %S' -o cpu.txt "$@" >/dev/null 2>err.txt || { cat err.txt >&2; exit 1; }
  W[$name]+="$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') "
  C[$name]+="$(awk '{ printf "%.2f", $1 + $2 }' cpu.txt) "
}
med() { printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$N"); do
  rm -f r.img; run old "$OLD" restore "$ARCHIVE" r.img --quiet
  rm -f r.img; run new "$NEW" restore "$ARCHIVE" r.img --quiet
  rm -rf x; mkdir x; run tar tar -xf "$TARBALL" -C x
done
for k in old new tar; do
  echo "$k: wall ${W[$k]}median $(med "${W[$k]}") s; cpu ${C[$k]}median $(med "${C[$k]}") s"
done
awk -v o="$(med "${C[old]}")" -v n="$(med "${C[new]}")" -v t="$(med "${C[tar]}")" -v wo="$(med "${W[old]}")" -v wn="$(med "${W[new]}")" -v wt="$(med "${W[tar]}")" \
  'BEGIN { printf "old/tar: wall %.2f cpu %.2f; new/tar: wall %.2f cpu %.2f\n", wo / wt, o / t, wn / wt, n / t }'
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
