#!/usr/bin/env bash
# Object-storage-like benchmark: wasftp with the slow test plugin
# (tests/plugins/slow: the memory filesystem behind DELAY_MS per plugin call,
# 8 MiB read and write chunks, no random writes), driven by OpenSSH's sftp.
# Prints medians of RUNS runs and the plugin calls each transfer made, the
# server's memory growth (peak RSS over the idle server) during each
# transfer, and two downloads at once in one SFTP session (asyncssh) against
# one, with the plugin declared stateless (so the session uses several
# instances) serving a synthetic file every instance has.
#
#   bash bench/slow_plugin.sh                     # 2 ms per call, 256 MiB, 3 runs
#   DELAY_MS=10 SIZE_MIB=128 RUNS=5 bash bench/slow_plugin.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-256}
DELAY_MS=${DELAY_MS:-2}
CHUNK=${CHUNK:-8M}
CIPHER=${CIPHER:-aes256-gcm@openssh.com}
PORT=${PORT:-22424}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

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
# The same plugin, stateless, on a second user (each instance has its own
# files, so only the synthetic /.pattern/N files are read there).
cat >> "$WORK/wasftp.toml" <<TOML
[plugins.stateless]
source = "$PLUGIN"
memory_limit_mib = 512
call_deadline_ms = 60000
config = { delay-ms = "$DELAY_MS", read-chunk = "$CHUNK", write-chunk = "$CHUNK", scope = "stateless" }
[[users]]
name = "many"
plugin = "stateless"
authorized_keys = ["$(cat "$WORK/client_key.pub")"]
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/wasftp.toml" > "$WORK/wasftp.log" 2>&1 &
SERVER=$!
PIDS+=($SERVER)
wait_for_port "$PORT"

# rss_kib: the server's resident memory now
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$SERVER/status"; }
# peak_during CMD...: runs CMD, prints the server's peak RSS growth (MiB) over its RSS before
peak_during() {
  local before peak_file="$WORK/peak"
  before=$(rss_kib); echo "$before" > "$peak_file"
  ( while :; do r=$(rss_kib); [ "$r" -gt "$(cat "$peak_file")" ] && echo "$r" > "$peak_file"; sleep 0.05; done ) &
  local sampler=$!
  "$@" > /dev/null
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  echo "($(cat "$peak_file") - $before) / 1024" | bc
}

sftp_batch() {
  sftp -q -b "$1" -P "$PORT" -c "$CIPHER" -i "$WORK/client_key" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR bench@127.0.0.1
}
# calls OP: how many calls of kind OP the plugin has answered
calls() {
  printf 'ls -l /.calls\n' > "$WORK/calls"
  sftp_batch "$WORK/calls" | awk -v op="$1" '$NF == op { n = $5 } END { print n + 0 }'
}
timed() { timed_sftp bench "$PORT" "$1"; }

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
# Memory: one more upload and download each, sampled.
put_rss=$(peak_during sftp_batch "$WORK/put")
get_rss=$(peak_during sftp_batch "$WORK/get")

# Two downloads at once in one session, against one (asyncssh, 64 requests in
# flight each, of the 255 KiB the server announces in limits@openssh.com).
python3 -c 'import asyncssh' 2>/dev/null || python3 -m pip install -q asyncssh || python3 -m pip install -q --break-system-packages asyncssh
cat > "$WORK/parallel.py" <<'PY'
import asyncio, sys, time, asyncssh
port, key, size, runs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
async def main():
    async with asyncssh.connect("127.0.0.1", port, username="many", client_keys=[key], known_hosts=None) as conn:
        async with conn.start_sftp_client() as sftp:
            async def fetch(i):
                async with sftp.open(f"/.pattern/{size}", "rb", block_size=255 * 1024, max_requests=64) as f:
                    got = 0
                    while True:
                        data = await f.read(64 << 20, got)
                        if not data:
                            return got
                        got += len(data)
            ones, twos = [], []
            for _ in range(runs):
                t = time.perf_counter(); assert await fetch(0) == size; ones.append(size / (time.perf_counter() - t))
                t = time.perf_counter(); got = await asyncio.gather(fetch(1), fetch(2)); twos.append(2 * size / (time.perf_counter() - t))
                assert got == [size, size]
            med = lambda xs: sorted(xs)[len(xs) // 2]
            print(f"{med(ones) / 1e6:.1f} {med(twos) / 1e6:.1f}")
asyncio.run(main())
PY
read -r one two < <(python3 "$WORK/parallel.py" "$PORT" "$WORK/client_key" $((SIZE_MIB << 20)) "$RUNS")

echo "slow plugin: ${DELAY_MS} ms per call, ${CHUNK} chunks, ${SIZE_MIB} MiB, cipher $CIPHER, median of $RUNS runs"
printf '%-5s %9.1f MB/s   plugin %s calls: %s   server memory growth: %s MiB\n' put "$(echo "$SIZE_MIB * 1.048576 / $put" | bc -l)" write-chunk "$((w1 - w0))" "$put_rss"
printf '%-5s %9.1f MB/s   plugin %s calls: %s   server memory growth: %s MiB\n' get "$(echo "$SIZE_MIB * 1.048576 / $get" | bc -l)" read "$((r1 - r0))" "$get_rss"
printf 'one session, stateless plugin (asyncssh): one download %s MB/s, two at once %s MB/s in all (%.2fx)\n' "$one" "$two" "$(echo "$two / $one" | bc -l)"
