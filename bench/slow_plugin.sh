#!/usr/bin/env bash
# Object-storage-like benchmark: wasftp with the slow test plugin
# (tests/plugins/slow: the memory filesystem behind DELAY_MS per plugin call,
# 8 MiB read and write chunks, no random writes), driven by OpenSSH's sftp.
# Prints medians of RUNS runs and the plugin calls each transfer made.
#
#   bash bench/slow_plugin.sh                     # 2 ms per call, 256 MiB, 3 runs
#   DELAY_MS=10 SIZE_MIB=128 RUNS=5 bash bench/slow_plugin.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-256}
DELAY_MS=${DELAY_MS:-2}
CHUNK=${CHUNK:-8M}
CIPHER=${CIPHER:-aes256-gcm@openssh.com}
PORT=${PORT:-22424}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

command -v bc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
cargo build --release -q -p wasftp
BIN="$CARGO_TARGET_DIR/release/wasftp"
# The plugin, built as the tests build it.
env -u CARGO_TARGET_DIR cargo build -q --manifest-path tests/plugins/slow/Cargo.toml \
  --target wasm32-wasip2 --profile plugin --target-dir "$CARGO_TARGET_DIR/wasm-plugins"
PLUGIN="$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip2/plugin/wasftp_plugin_slow.wasm"

WORK=$(mktemp -d /dev/shm/wasftp-slow-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/big"
cat > "$WORK/wasftp.toml" <<TOML
listen = "127.0.0.1:$PORT"
state_dir = "$WORK/state"
[limits]
idle_timeout_secs = 120
[plugins.slow]
source = "$PLUGIN"
memory_limit_mib = 4096
call_deadline_ms = 60000
config = { delay-ms = "$DELAY_MS", read-chunk = "$CHUNK", write-chunk = "$CHUNK", random-write = "off" }
[[users]]
name = "bench"
plugin = "slow"
authorized_keys = ["$(cat "$WORK/client_key.pub")"]
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/wasftp.toml" > "$WORK/wasftp.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done

sftp_batch() {
  sftp -q -b "$1" -P "$PORT" -c "$CIPHER" -i "$WORK/client_key" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR bench@127.0.0.1
}
# calls OP: how many calls of kind OP the plugin has answered
calls() {
  printf 'ls -l /.calls\n' > "$WORK/calls"
  sftp_batch "$WORK/calls" | awk -v op="$1" '$NF == op { n = $5 } END { print n + 0 }'
}
timed() {
  local start end
  start=$(date +%s.%N); sftp_batch "$1" > /dev/null; end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf 'put %s/big /big\n' "$WORK" > "$WORK/put"
printf 'get /big %s/got\n' "$WORK" > "$WORK/get"
puts=(); gets=()
for _ in $(seq "$RUNS"); do
  w0=$(calls write-chunk); puts+=("$(timed "$WORK/put")"); w1=$(calls write-chunk)
  r0=$(calls read); rm -f "$WORK/got"; gets+=("$(timed "$WORK/get")"); r1=$(calls read)
  cmp -s "$WORK/big" "$WORK/got" || { echo "downloaded file differs" >&2; exit 1; }
done
put=$(printf '%s\n' "${puts[@]}" | median)
get=$(printf '%s\n' "${gets[@]}" | median)
echo "slow plugin: ${DELAY_MS} ms per call, ${CHUNK} chunks, ${SIZE_MIB} MiB, cipher $CIPHER, median of $RUNS runs"
printf '%-5s %9.1f MB/s   plugin %s calls: %s\n' put "$(echo "$SIZE_MIB * 1.048576 / $put" | bc -l)" write-chunk "$((w1 - w0))"
printf '%-5s %9.1f MB/s   plugin %s calls: %s\n' get "$(echo "$SIZE_MIB * 1.048576 / $get" | bc -l)" read "$((r1 - r0))"
