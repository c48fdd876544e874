#!/usr/bin/env bash
# All benchmarks in one run, each against its real peer tools:
#   create.sh    mkfs-crypt create vs tar -cf, mke2fs -d, mkfs.erofs; extract vs tar -xf   (issue 2)
#   fsck.sh      fsck-crypt check vs e2fsck -fn; --data scrub GB/s                         (issue 3)
#   backup.sh    backup-crypt create/restore vs tar -cf/-xf                                 (issue 4)
#   lifecycle.sh snapshot, lazy rekey, rekey --reencrypt vs create                          (issue 5)
#   linux.sh     the Linux 6.1 source tree: backup vs tar -cf, create vs mkfs.erofs and
#                mke2fs -d, check vs e2fsck -fn; interleaved pairs, medians         (issue 12)
# Each script gets a fresh scratch directory (tmpfs when it has room) and its own
# default scale; BENCH_SCALE=small runs everything quickly. The figures in
# BENCHMARKS.md come from `bash bench/run.sh 2>&1 | tee bench/last-run.txt`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(cd "$here/.." && cargo build --release --quiet)
echo "cryptimg benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
echo "commit $(git -C "$here/.." rev-parse --short HEAD)"
for s in create fsck backup lifecycle linux; do
  echo
  echo "################ $s"
  if [ -d /dev/shm ] && [ "$(df --output=avail -k /dev/shm | tail -1)" -gt $((14 * 1024 * 1024)) ]; then
    dir=$(mktemp -d /dev/shm/cryptimg-bench.XXXX)
  else
    dir=$(mktemp -d /tmp/cryptimg-bench.XXXX)
  fi
  BENCH_DIR=$dir bash "$here/$s.sh" || echo "!! $s.sh failed"
  rm -rf "$dir"
done
