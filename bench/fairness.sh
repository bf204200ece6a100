#!/usr/bin/env bash
# Fairness between tenants: bob's STAT latency while eve's sessions keep
# guests spinning on the adversarial plugin (tests/benches/fairness.rs).
#
#   bash bench/fairness.sh                 # 3 runs of 8 s per row
#   RUNS=5 SECONDS=4 bash bench/fairness.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"
cargo bench -q -p wasftp-tests --bench fairness
