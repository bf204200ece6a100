#!/usr/bin/env bash
# The S3 plugin against its peers, all on one garage (loopback) in the same run:
# - put and get of one big file through wasftp (OpenSSH's sftp client), against
#   the same object moved directly with aws-sdk-s3 (bench/s3-direct);
# - put and get of many small files through wasftp, against `rclone serve sftp`
#   on the same bucket.
# Prints medians of RUNS runs and the ratios.
#
#   bash bench/s3.sh                       # 256 MiB, 1000 x 4 KiB, 3 runs
#   RUNS=5 SIZE_MIB=128 bash bench/s3.sh
#   PEER_RCLONE= bash bench/s3.sh          # without the rclone peer
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-256}
SMALL_FILES=${SMALL_FILES:-1000}
# chacha20: rclone 1.60 (Debian 12) offers no aes256-gcm.
CIPHER=${CIPHER:-chacha20-poly1305@openssh.com}
WASFTP_PORT=${WASFTP_PORT:-22432}
RCLONE_PORT=${RCLONE_PORT:-22433}
S3_PORT=${S3_PORT:-22434}
RPC_PORT=${RPC_PORT:-22435}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

command -v garage >/dev/null || { echo "garage is missing: bash .ci/run installs it" >&2; exit 1; }
apt_install rclone
cargo build --release -q -p wasftp
cargo build --release -q -p wasftp-bench-s3-direct
BIN="$CARGO_TARGET_DIR/release/wasftp"
DIRECT="$CARGO_TARGET_DIR/release/s3-direct"

WORK=$(mktemp -d /dev/shm/wasftp-s3-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# garage: one node, one bucket, one key (the same setup as the tests).
export AWS_ACCESS_KEY_ID=GK0123456789abcdef01234567
export AWS_SECRET_ACCESS_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ENDPOINT="http://127.0.0.1:$S3_PORT"
BUCKET=wasftp
cat > "$WORK/garage.toml" <<TOML
metadata_dir = "$WORK/garage/meta"
data_dir = "$WORK/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
TOML
g() { garage -c "$WORK/garage.toml" "$@" > /dev/null; }
garage -c "$WORK/garage.toml" server > "$WORK/garage.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do garage -c "$WORK/garage.toml" status > /dev/null 2>&1 && break; sleep 0.1; done
garage -c "$WORK/garage.toml" node id -q > "$WORK/node"
g layout assign -z dc1 -c 10G "$(cut -d@ -f1 "$WORK/node")"
g layout apply --version 1
g key import --yes -n bench "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
g bucket create "$BUCKET"
g bucket allow --read --write --owner "$BUCKET" --key bench

ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
mkdir -p "$WORK/local/small"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/local/big"
for i in $(seq 1 "$SMALL_FILES"); do head -c 4096 /dev/urandom > "$WORK/local/small/f$i"; done

cat > "$WORK/wasftp.toml" <<TOML
listen = "127.0.0.1:$WASFTP_PORT"
state_dir = "$WORK/wasftp-state"
[limits]
idle_timeout_secs = 300
[plugins.s3]
source = "bundled:s3"
http_allow = ["$ENDPOINT"]
[plugins.s3.config]
endpoint = "$ENDPOINT"
bucket = "$BUCKET"
prefix = "wasftp/"
access-key-id = "\${AWS_ACCESS_KEY_ID}"
secret-access-key = "\${AWS_SECRET_ACCESS_KEY}"
# The same bucket with the checks OpenSSH's server makes at OPEN.
[plugins.s3-open-checks]
source = "bundled:s3"
http_allow = ["$ENDPOINT"]
[plugins.s3-open-checks.config]
endpoint = "$ENDPOINT"
bucket = "$BUCKET"
prefix = "wasftp-open-checks/"
open-checks = "true"
access-key-id = "\${AWS_ACCESS_KEY_ID}"
secret-access-key = "\${AWS_SECRET_ACCESS_KEY}"
[[users]]
name = "bench"
plugin = "s3"
authorized_keys = ["$(cat "$WORK/client_key.pub")"]
[[users]]
name = "bench-open-checks"
plugin = "s3-open-checks"
authorized_keys = ["$(cat "$WORK/client_key.pub")"]
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/wasftp.toml" > "$WORK/wasftp.log" 2>&1 &
PIDS+=($!)

wait_for_port "$WASFTP_PORT"
# rclone's SFTP server over the same bucket, its files under rclone/. The
# remote is set through the environment: an endpoint with a port inside an
# on-the-fly remote string (":s3,endpoint=http://h:p:...") is cut at its colon.
# AWS_CA_BUNDLE (set on some machines) breaks rclone 1.60's S3 client over plain HTTP.
if [ -n "${PEER_RCLONE-rclone}" ]; then
  RCLONE_CONFIG=/dev/null RCLONE_S3_PROVIDER=Other RCLONE_S3_ENDPOINT="$ENDPOINT" RCLONE_S3_REGION=us-east-1 \
    RCLONE_S3_FORCE_PATH_STYLE=true RCLONE_S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    RCLONE_S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" env -u AWS_CA_BUNDLE \
    rclone serve sftp ":s3:$BUCKET/rclone" \
    --addr "127.0.0.1:$RCLONE_PORT" --authorized-keys "$WORK/client_key.pub" > "$WORK/rclone.log" 2>&1 &
  PIDS+=($!)
  wait_for_port "$RCLONE_PORT"
fi
sleep 0.5

RESULTS="$WORK/results"
GARAGE_PID=${PIDS[0]}
WASFTP_PID=${PIDS[1]}
# cpu_seconds PID: user + system CPU seconds the process has used so far
cpu_seconds() { awk -v tck="$(getconf CLK_TCK)" '{print ($14 + $15) / tck}' "/proc/$1/stat"; }
# timed_cpu LABEL CMD...: runs CMD (which prints its seconds) and records,
# beside them, the CPU seconds garage and wasftp used meanwhile
timed_cpu() {
  local label=$1 g0 w0 secs
  shift
  g0=$(cpu_seconds "$GARAGE_PID"); w0=$(cpu_seconds "$WASFTP_PID")
  secs=$("$@")
  echo "$label $(echo "$(cpu_seconds "$GARAGE_PID") - $g0" | bc -l) $(echo "$(cpu_seconds "$WASFTP_PID") - $w0" | bc -l)" >> "$WORK/cpu"
  echo "$secs"
}
# Big file: wasftp (SFTP into the plugin) and aws-sdk-s3 direct.
printf 'put %s/local/big big\n' "$WORK" > "$WORK/put_big"
printf 'get big %s/got_big\n' "$WORK" > "$WORK/get_big"
for case in put_big get_big; do
  times=()
  for _ in $(seq "$RUNS"); do
    rm -f "$WORK/got_big"
    times+=("$(timed_cpu "wasftp_$case" timed_sftp bench "$WASFTP_PORT" "$WORK/$case")")
    if [ "$case" = get_big ]; then cmp -s "$WORK/local/big" "$WORK/got_big" || { echo "wasftp: downloaded file differs" >&2; exit 1; }; fi
  done
  echo "wasftp $case $(printf '%s\n' "${times[@]}" | median)" | tee -a "$RESULTS"
  times=()
  for _ in $(seq "$RUNS"); do
    rm -f "$WORK/got_big"
    if [ "$case" = put_big ]; then
      times+=("$(timed_cpu direct_put_big "$DIRECT" put "$ENDPOINT" "$BUCKET" direct/big "$WORK/local/big")")
    else
      times+=("$(timed_cpu direct_get_big "$DIRECT" get "$ENDPOINT" "$BUCKET" direct/big "$WORK/got_big")")
      cmp -s "$WORK/local/big" "$WORK/got_big" || { echo "direct: downloaded file differs" >&2; exit 1; }
    fi
  done
  echo "direct $case $(printf '%s\n' "${times[@]}" | median)" | tee -a "$RESULTS"
done

# Small files: wasftp (without and with OPEN's checks) and rclone serve sftp.
# Only the uploads are timed: the last run's files are removed beforehand.
printf -- '-rm small/*\n-rmdir small\nmkdir small\n' > "$WORK/clear_small"
printf 'put %s/local/small/* small/\n' "$WORK" > "$WORK/put_small"
printf 'get small/* %s/got_small/\n' "$WORK" > "$WORK/get_small"
for target in wasftp wasftp-open-checks ${PEER_RCLONE-rclone}; do
  port=$([ "$target" = rclone ] && echo "$RCLONE_PORT" || echo "$WASFTP_PORT")
  user=$([ "$target" = wasftp-open-checks ] && echo bench-open-checks || echo bench)
  cases="put_small get_small"
  [ "$target" = wasftp-open-checks ] && cases=put_small
  for case in $cases; do
    times=()
    for _ in $(seq "$RUNS"); do
      rm -rf "$WORK/got_small"; mkdir -p "$WORK/got_small"
      if [ "$case" = put_small ]; then timed_sftp "$user" "$port" "$WORK/clear_small" > /dev/null; fi
      times+=("$(timed_sftp "$user" "$port" "$WORK/$case")")
      if [ "$case" = get_small ] && [ "$(ls "$WORK/got_small" | wc -l)" != "$SMALL_FILES" ]; then
        echo "$target: small files missing (its log: $WORK/$target.log)" >&2
        [ "$target" != rclone ] && exit 1
      fi
    done
    echo "$target $case $(printf '%s\n' "${times[@]}" | median)" | tee -a "$RESULTS"
  done
done

echo
echo "garage on loopback, cipher $CIPHER, ${SIZE_MIB} MiB file, $SMALL_FILES x 4 KiB files, median of $RUNS runs"
awk -v size="$SIZE_MIB" -v n="$SMALL_FILES" '
  { t[$1" "$2] = $3 }
  END {
    printf "%-10s %16s %16s %8s\n", "case", "wasftp", "peer", "ratio"
    n_cases = split("put_big:direct:wasftp get_big:direct:wasftp put_small:rclone:wasftp put_small:rclone:wasftp-open-checks get_small:rclone:wasftp", cases, " ")
    for (i = 1; i <= n_cases; i++) {
      split(cases[i], p, ":"); c = p[1]; peer = p[2]
      w = t[p[3] " " c]; o = t[peer " " c]
      if (p[3] != "wasftp") printf "(open-checks = true)\n"
      if (c ~ /big/) { wr = size * 1.048576 / w; unit = "MB/s" } else { wr = n / w; unit = "files/s" }
      if (o == "") { printf "%-10s %9.1f %-7s %16s\n", c, wr, unit, "(peer not run)"; continue }
      orate = (c ~ /big/) ? size * 1.048576 / o : n / o
      printf "%-10s %9.1f %-7s %9.1f %-7s %6.2fx  (peer: %s)\n", c, wr, unit, orate, unit, wr / orate, peer == "direct" ? "aws-sdk-s3 direct" : "rclone serve sftp"
    }
  }' "$RESULTS"

# Where the CPU went in the big cases: on a machine of few cores, garage,
# the SSH client and wasftp share them, so the ratio above is bounded by
# the CPU all of them need, not by waiting.
echo
echo "CPU seconds per big transfer (median): garage, wasftp"
for label in wasftp_put_big direct_put_big wasftp_get_big direct_get_big; do
  g=$(awk -v l="$label" '$1 == l {print $2}' "$WORK/cpu" | median)
  w=$(awk -v l="$label" '$1 == l {print $3}' "$WORK/cpu" | median)
  printf '%-16s garage %6.2f  wasftp %6.2f\n' "$label" "$g" "$w"
done
