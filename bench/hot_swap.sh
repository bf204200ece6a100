#!/usr/bin/env bash
# Hot-swap (issue 30), release build, the memory plugin loaded from a file:
#  - swap time: from the plugin file changing (a new build renamed into
#    place) to the new version serving, and to the first SFTP session on it
#    logged in and answering (median of SWAPS);
#  - the state hand-over: a tenant holding SIZE_MIB in FILES files is moved
#    to a new version (PUT /plugins/memory); the time the move took, from
#    the swap report, and per GiB (median of RUNS).
#
#   bash bench/hot_swap.sh
#   SWAPS=10 RUNS=3 SIZE_MIB=1024 FILES=64 bash bench/hot_swap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
apt_install curl

SWAPS=${SWAPS:-10}
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-64}
CIPHER=${CIPHER:-aes256-gcm@openssh.com}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

cargo build --release -q -p wasftp
BIN="$CARGO_TARGET_DIR/release/wasftp"
BUILD="$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip2/plugin/wasftp_plugin_memory.wasm"
[ -f "$BUILD" ] || { echo "no memory plugin build at $BUILD" >&2; exit 1; }

WORK=$(mktemp -d /tmp/wasftp-hotswap.XXXXXX)
SERVER=
cleanup() { [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export WASFTP_ADMIN_TOKEN=bench-admin-token-0123456789

# variant TAG OUT: the memory build with one more custom section (another
# hash, the same code), as a rebuild would be
variant() {
  python3 - "$BUILD" "$1" "$2" <<'EOF'
import sys
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
src, tag, out = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
name = b"wasftp-bench-build"
body = leb(len(name)) + name + tag
open(out, "wb").write(open(src, "rb").read() + b"\0" + leb(len(body)) + body)
EOF
}

start_server() {
  PORT=$(free_port); ADMIN=$(free_port)
  cp "$BUILD" "$WORK/memory.wasm"
  cat > "$WORK/config.toml" <<EOF
listen = "127.0.0.1:$PORT"
state_dir = "$WORK/state"
[admin]
listen = "127.0.0.1:$ADMIN"
[plugins.memory]
source = "$WORK/memory.wasm"
memory_limit_mib = $((SIZE_MIB * 2 + 512))
[[users]]
name = "bench"
authorized_keys = ["$(cat "$WORK/client_key.pub")"]
EOF
  RUST_LOG=warn "$BIN" serve --config "$WORK/config.toml" > "$WORK/server.log" 2>&1 &
  SERVER=$!
  wait_for_port "$PORT"; wait_for_port "$ADMIN"
}
stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
api() { curl -sf -H "Authorization: Bearer $WASFTP_ADMIN_TOKEN" "$@"; }
current() { api "http://127.0.0.1:$ADMIN/plugins" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["current"]["number"])'; }
now() { date +%s.%N; }

echo "== swap time, $SWAPS swaps (file renamed into place)"
start_server
printf 'pwd\n' > "$WORK/pwd.batch"
: > "$WORK/to_current"; : > "$WORK/to_session"
for i in $(seq "$SWAPS"); do
  variant "swap-$i" "$WORK/next.wasm"
  before=$(current)
  t0=$(now)
  mv "$WORK/next.wasm" "$WORK/memory.wasm"
  until [ "$(current)" -gt "$before" ]; do sleep 0.005; done
  t1=$(now)
  sftp -q -b "$WORK/pwd.batch" -P "$PORT" -c "$CIPHER" -i "$WORK/client_key" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR bench@127.0.0.1 > /dev/null
  t2=$(now)
  echo "$t1 - $t0" | bc -l >> "$WORK/to_current"
  echo "$t2 - $t0" | bc -l >> "$WORK/to_session"
done
stop_server
printf 'file change -> new version current: median %.0f ms\n' "$(median < "$WORK/to_current" | awk '{print $1 * 1000}')"
printf 'file change -> first session on it answered: median %.0f ms\n' "$(median < "$WORK/to_session" | awk '{print $1 * 1000}')"

echo "== state hand-over, $SIZE_MIB MiB in $FILES files, $RUNS runs"
per_file=$((SIZE_MIB / FILES))
head -c $((per_file << 20)) /dev/urandom > "$WORK/blob"
: > "$WORK/put.batch"
for f in $(seq "$FILES"); do echo "put $WORK/blob /f$f" >> "$WORK/put.batch"; done
: > "$WORK/handover_ms"
for run in $(seq "$RUNS"); do
  start_server
  sftp -q -b "$WORK/put.batch" -P "$PORT" -c "$CIPHER" -i "$WORK/client_key" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR bench@127.0.0.1 > /dev/null
  variant "handover-$run" "$WORK/next.wasm"
  report=$(api -X PUT --data-binary "@$WORK/next.wasm" "http://127.0.0.1:$ADMIN/plugins/memory")
  ms=$(echo "$report" | python3 -c 'import json,re,sys; m=re.search(r"\((\d+) bytes in (\d+) ms\)", json.load(sys.stdin)["message"]); print(m.group(2), m.group(1))')
  echo "run $run: moved $(echo "$ms" | cut -d' ' -f2) bytes in $(echo "$ms" | cut -d' ' -f1) ms"
  echo "$ms" | cut -d' ' -f1 >> "$WORK/handover_ms"
  stop_server
done
ms=$(median < "$WORK/handover_ms")
echo "hand-over of $SIZE_MIB MiB: median $ms ms, $(echo "$ms * 1024 / $SIZE_MIB" | bc) ms per GiB"
