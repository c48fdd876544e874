#!/usr/bin/env bash
# Two builds of the tools, interleaved (old, new, old, new ...; 5 rounds, medians): extract
# of 20,000 small files and backup restore of 512 MiB. For checking that a change did not
# regress: OLD_BIN and NEW_BIN are target/release directories of the two builds.
# Example: OLD_BIN=/path/to/old/target/release NEW_BIN=target/release bash bench/compare-builds.sh
set -euo pipefail
OLD=${OLD_BIN:?set OLD_BIN}; NEW=${NEW_BIN:?set NEW_BIN}
D=$(mktemp -d /dev/shm/pair.XXXX); trap 'rm -rf $D' EXIT
K=$D/key; install -m 600 "$(dirname "$0")/../testdata/demo/key" $K
python3 - $D/small 20000 <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2]); r = random.Random(42); blob = os.urandom(1 << 20)
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}", f"e{(i // 100) % 10}"); os.makedirs(d, exist_ok=True)
    size = r.choice([0, 100, 700, 1500, 4000, 4096, 9000, 16384]); off = r.randrange(0, len(blob) - size) if size else 0
    open(os.path.join(d, f"file-{i:06d}.dat"), "wb").write(blob[off:off + size])
PY
mkdir -p $D/med; for i in 1 2 3 4; do head -c $((128<<20)) /dev/urandom > $D/med/m$i.bin; done
t() { local s=$(date +%s%N); "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; return 1; }; echo $(( ($(date +%s%N)-s)/1000000 )); }
for v in OLD NEW; do b=${!v}; $b/mkfs-crypt create $D/$v-s.img --root $D/small --key-file $K --force -q; $b/mkfs-crypt create $D/$v-m.img --root $D/med --key-file $K --force -q; $b/backup-crypt create $D/$v-m.img -o $D/$v-m.tar >/dev/null 2>&1 || $b/backup-crypt create $D/$v-m.img -o $D/$v-m.tar --force >/dev/null; done
eo=(); en=(); ro=(); rn=()
for i in 1 2 3 4 5; do
  rm -rf $D/x; eo+=($(t $OLD/fsck-crypt extract $D/OLD-s.img $D/x --key-file $K --no-progress))
  rm -rf $D/x; en+=($(t $NEW/fsck-crypt extract $D/NEW-s.img $D/x --key-file $K --no-progress))
  rm -f $D/r.img; ro+=($(t $OLD/backup-crypt restore $D/OLD-m.tar $D/r.img))
  rm -f $D/r.img; rn+=($(t $NEW/backup-crypt restore $D/NEW-m.tar $D/r.img --quiet))
done
med() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
echo "extract 20k small files  old: ${eo[*]} (median $(med ${eo[@]}))  new: ${en[*]} (median $(med ${en[@]}))"
echo "restore 512 MiB          old: ${ro[*]} (median $(med ${ro[@]}))  new: ${rn[*]} (median $(med ${rn[@]}))"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
