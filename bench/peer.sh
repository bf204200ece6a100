#!/usr/bin/env bash
# Peer benchmark: the same OpenSSH sftp client and cipher against
#   1. wasftp (release build, bundled memory plugin, or PLUGIN=localfs: the
#      local-folder plugin on a folder beside sshd's), and
#   2. OpenSSH sshd + sftp-server with files on tmpfs (/dev/shm),
# measured in the same run. Prints medians of RUNS runs and the ratio
# wasftp/OpenSSH (higher is better for wasftp).
#
#   bash bench/peer.sh                  # 256 MiB put/get, 1000 x 4 KiB put/get, 3 runs
#   RUNS=5 SIZE_MIB=512 bash bench/peer.sh
#   PLUGIN=localfs bash bench/peer.sh   # both servers' files in folders on tmpfs
#   PLUGIN=localfs DURABLE=false bash bench/peer.sh   # localfs without its fsyncs
#   PLUGIN=localfs BENCH_DIR=/var/tmp bash bench/peer.sh   # both on a disk, where fsync costs
#   PLUGIN=localfs FSYNC=true bash bench/peer.sh   # puts with `put -f` (fsync@openssh.com) on both
#
# A slow backend (a delay in every plugin call) is measured by bench/slow_plugin.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-256}
SMALL_FILES=${SMALL_FILES:-1000}
CIPHER=${CIPHER:-aes256-gcm@openssh.com}
WASFTP_PORT=${WASFTP_PORT:-22422}
SSHD_PORT=${SSHD_PORT:-22423}
PLUGIN=${PLUGIN:-memory}
DURABLE=${DURABLE:-true}
BENCH_DIR=${BENCH_DIR:-/dev/shm}
FSYNC=${FSYNC:-false}
PUT=$([ "$FSYNC" = true ] && echo "put -f" || echo put)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

if [ ! -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
cargo build --release -q -p wasftp
BIN="$CARGO_TARGET_DIR/release/wasftp"

WORK=$(mktemp -d "$BENCH_DIR/wasftp-bench.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
mkdir -p "$WORK/local/small" "$WORK/sshd_root"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/local/big"
for i in $(seq 1 "$SMALL_FILES"); do head -c 4096 /dev/urandom > "$WORK/local/small/f$i"; done

# wasftp
plugin_config() {
  case "$PLUGIN" in
    memory) printf '[plugins.files]\nsource = "bundled:memory"\nmemory_limit_mib = 4096\n' ;;
    localfs)
      mkdir -p "$WORK/localfs_root"
      printf '[plugins.files]\nsource = "bundled:localfs"\npreopen = { dir = "%s", mode = "rw" }\nconfig = { durable = "%s" }\n' \
        "$WORK/localfs_root" "$DURABLE" ;;
    *) echo "PLUGIN is memory or localfs" >&2; exit 2 ;;
  esac
}
cat > "$WORK/wasftp.toml" <<TOML
listen = "127.0.0.1:$WASFTP_PORT"
state_dir = "$WORK/wasftp-state"
[limits]
idle_timeout_secs = 120
$(plugin_config)
[[users]]
name = "bench"
plugin = "files"
authorized_keys = ["$(cat "$WORK/client_key.pub")"]
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/wasftp.toml" > "$WORK/wasftp.log" 2>&1 &
PIDS+=($!)

# OpenSSH sshd + sftp-server, files on tmpfs
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
chmod 600 "$WORK/authorized_keys"
cat > "$WORK/sshd_config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $WORK/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -D -f "$WORK/sshd_config" -E "$WORK/sshd.log" &
PIDS+=($!)

wait_for_port "$WASFTP_PORT"
sleep 0.5


# bench NAME PORT REMOTE_DIR: prints "case median_seconds" lines
bench_target() {
  local name=$1 port=$2 remote=$3
  USER_AT=$([ "$name" = wasftp ] && echo bench || whoami)
  printf '%s %s/local/big %s/big\n' "$PUT" "$WORK" "$remote" > "$WORK/put_big"
  printf 'get %s/big %s/got_big\n' "$remote" "$WORK" > "$WORK/get_big"
  printf -- '-rm %s/small/*\n-rmdir %s/small\nmkdir %s/small\n%s %s/local/small/* %s/small/\n' \
    "$remote" "$remote" "$remote" "$PUT" "$WORK" "$remote" > "$WORK/put_small"
  printf 'get %s/small/* %s/got_small/\n' "$remote" "$WORK" > "$WORK/get_small"
  for case in put_big get_big put_small get_small; do
    local times=()
    for _ in $(seq "$RUNS"); do
      rm -rf "$WORK/got_big" "$WORK/got_small"; mkdir -p "$WORK/got_small"
      times+=("$(timed_sftp "$USER_AT" "$port" "$WORK/$case")")
      if [ "$case" = get_big ]; then cmp -s "$WORK/local/big" "$WORK/got_big" || { echo "$name: downloaded file differs" >&2; exit 1; }; fi
      if [ "$case" = get_small ]; then [ "$(ls "$WORK/got_small" | wc -l)" = "$SMALL_FILES" ] || { echo "$name: small files missing" >&2; exit 1; }; fi
    done
    echo "$name $case $(printf '%s\n' "${times[@]}" | median)"
  done
}

RESULTS="$WORK/results"
bench_target wasftp "$WASFTP_PORT" "" | tee -a "$RESULTS"
bench_target openssh "$SSHD_PORT" "$WORK/sshd_root" | tee -a "$RESULTS"

echo
echo "wasftp plugin $PLUGIN$([ "$PLUGIN" = localfs ] && echo " (durable $DURABLE)"), files in $BENCH_DIR, puts: $PUT"
echo "cipher $CIPHER, ${SIZE_MIB} MiB file, $SMALL_FILES x 4 KiB files, median of $RUNS runs"
awk -v size="$SIZE_MIB" -v n="$SMALL_FILES" '
  { t[$1" "$2] = $3 }
  END {
    printf "%-10s %14s %14s %8s\n", "case", "wasftp", "openssh", "ratio"
    split("put_big get_big put_small get_small", cases, " ")
    for (i = 1; i <= 4; i++) {
      c = cases[i]; w = t["wasftp " c]; o = t["openssh " c]
      if (c ~ /big/) { wv = size * 1.048576 / w; ov = (o ? size * 1.048576 / o : 0); unit = "MB/s" }
      else { wv = n / w; ov = (o ? n / o : 0); unit = "files/s" }
      if (o) printf "%-10s %9.1f %-4s %9.1f %-4s %7.2fx\n", c, wv, unit, ov, unit, wv / ov
      else printf "%-10s %9.1f %-4s %14s %8s\n", c, wv, unit, "-", "-"
    }
  }' "$RESULTS"
