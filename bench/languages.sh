#!/usr/bin/env bash
# Plugins by language (issue 28), in one run: the Rust memory plugin, the
# JavaScript js-quota example and the Python python-tree example, each built
# by its real tool chain. Component size, compile cold and from the cache,
# the first instance's start, STAT p50 and GET MB/s of a 64 MiB file through
# one wasftp (release build); medians of RUNS runs. See bench/languages.py.
#
#   bash bench/languages.sh
#   RUNS=5 SIZE_MIB=128 STATS=2000 bash bench/languages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

cargo build --release -q -p wasftp
export BIN="$CARGO_TARGET_DIR/release/wasftp"
WORK=$(mktemp -d /dev/shm/wasftp-languages.XXXXXX)
export WORK
trap 'rm -rf "$WORK"' EXIT

ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
plugins/examples/js-quota/build "$WORK/js-quota.wasm" > /dev/null
plugins/examples/python-tree/build "$WORK/python-tree.wasm" > /dev/null
python3 bench/languages.py
