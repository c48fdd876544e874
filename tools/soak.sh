#!/usr/bin/env bash
# Soak run of the corruption campaign (fsck-crypt/tests/campaign.rs): many more
# seeded single-byte flips and truncations than `cargo test` does, each checked
# to neither panic, hang nor allocate without bound, and every flip of a live
# superblock, metadata block or extent to be detected.
#   RUNS=N (default 100000)  SEEDS="s1 s2 ..." (default: three fixed seeds)
# Results are recorded in docs/TESTING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100000}
SEEDS=${SEEDS:-"1 2 3"}
for seed in $SEEDS; do
  echo "== seed $seed, $RUNS runs"
  CRYPTIMG_CAMPAIGN_RUNS=$RUNS CRYPTIMG_CAMPAIGN_SEED=$seed \
    cargo test --release -q -p fsck-crypt --test campaign two_thousand_flips_and_truncations -- --nocapture 2>&1 \
    | grep -E "runs in|test result|panicked|FAILED"
done
