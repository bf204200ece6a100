#!/usr/bin/env bash
# Memory with many sessions (issue 26): the server's RSS with 1000 logged-in
# SFTP sessions of 10 users (100 each), every one with an upload in progress,
# against the budgets the config sets. Release build, bundled memory plugin,
# public-key logins, one fresh server per run.
#
# The server's VmRSS and VmHWM (peak so far) from /proc/PID/status, and what
# of the RSS is guest linear memory (the memory plugin's instances, one per
# tenant) from /proc/PID/smaps; the rest is the host. After each stage:
#   before_login         server up, nothing connected
#   logged_in            every SSH connection authenticated, no channel
#   sftp_open_idle       an SFTP channel open on each, nothing requested
#   uploads_in_progress  each has a file open for writing with SIZE_KIB
#                        written in WRITE_KIB WRITEs, not closed
#   uploads_closed       every upload CLOSEd (files now stored in the plugin)
#   disconnected_5s      every connection closed, 5 s later
# Twice: TENANTS=each (user0..user9, a tenant each, the default tenant) and
# TENANTS=shared (the 10 users in one tenant).
#
#   bash bench/memory.sh                          # 3 runs of each tenant layout
#   RUNS=1 TENANTS=each bash bench/memory.sh
#   USERS=10 CONNS_PER_USER=100 SIZE_KIB=1024 WRITE_KIB=32 bash bench/memory.sh
#   UPLOAD_BUFFER_MIB=64 UPLOAD_BUFFER_TOTAL_MIB=2048 MEMORY_LIMIT_MIB=512 bash bench/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-3}
TENANTS=${TENANTS:-each shared}
USERS=${USERS:-10}
CONNS_PER_USER=${CONNS_PER_USER:-100}
SIZE_KIB=${SIZE_KIB:-1024}
WRITE_KIB=${WRITE_KIB:-32}
CONCURRENCY=${CONCURRENCY:-50}          # logins in progress at once, below max_unauthenticated_per_ip
# [sftp] budgets; the README's defaults unless set
UPLOAD_BUFFER_MIB=${UPLOAD_BUFFER_MIB:-64}
UPLOAD_BUFFER_TOTAL_MIB=${UPLOAD_BUFFER_TOTAL_MIB:-2048}
UPLOAD_BUFFER_TENANT_MIB=${UPLOAD_BUFFER_TENANT_MIB:-$((UPLOAD_BUFFER_TOTAL_MIB / 4))}
READ_AHEAD_MIB=${READ_AHEAD_MIB:-64}
READ_AHEAD_TOTAL_MIB=${READ_AHEAD_TOTAL_MIB:-1024}
READ_AHEAD_TENANT_MIB=${READ_AHEAD_TENANT_MIB:-$((READ_AHEAD_TOTAL_MIB / 4))}
# MEMORY_LIMIT_MIB: the memory plugin's cap per instance (one instance per
# tenant); default: room for the tenant's uploads (see plugin_limit below)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasftp-target}"

CONNS=$((USERS * CONNS_PER_USER))
[ $((SIZE_KIB % WRITE_KIB)) = 0 ] || { echo "SIZE_KIB must be a multiple of WRITE_KIB" >&2; exit 1; }
python3 -c 'import asyncssh' 2>/dev/null || pip install -q asyncssh
# the server and the clients each hold a descriptor per connection
[ "$(ulimit -n)" -ge $((CONNS + 500)) ] || ulimit -n $((CONNS + 500))

cargo build --release -q -p wasftp
BIN="$CARGO_TARGET_DIR/release/wasftp"

WORK=$(mktemp -d /tmp/wasftp-memory.XXXXXX)
SERVER=
cleanup() { [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
PUBKEY=$(cat "$WORK/client_key.pub")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
min() { printf '%s\n' "$@" | sort -g | head -1; }

# plugin_limit TENANT_COUNT: the memory plugin's cap per instance, MiB. The
# plugin keeps max(cap/8, 16 MiB) for itself; give the uploads in progress a
# quarter more than their bytes, plus 64 MiB, at least 256 (the cap's
# default for other plugins), rounded up to 64 MiB.
plugin_limit() {
  if [ -n "${MEMORY_LIMIT_MIB:-}" ]; then echo "$MEMORY_LIMIT_MIB"; return; fi
  local per_tenant_mib=$(( (CONNS / $1) * SIZE_KIB / 1024 ))
  local want=$(( per_tenant_mib * 5 / 4 + 64 ))
  want=$(( (want + 63) / 64 * 64 ))
  [ "$want" -ge 256 ] || want=256
  echo "$want"
}

# write_config FILE PORT LAYOUT
write_config() {
  local file=$1 port=$2 layout=$3 tenants
  tenants=$([ "$layout" = shared ] && echo 1 || echo "$USERS")
  cat > "$file" <<TOML
listen = "127.0.0.1:$port"
state_dir = "$WORK/state"
[limits]
max_sessions = $((CONNS + 100))
max_sessions_per_user = $((CONNS_PER_USER + 28))
max_sessions_per_tenant = $((CONNS + 100))
max_unauthenticated = 200
max_unauthenticated_per_ip = 200
login_grace_secs = 60
[sftp]
upload_buffer_mib = $UPLOAD_BUFFER_MIB
upload_buffer_total_mib = $UPLOAD_BUFFER_TOTAL_MIB
upload_buffer_tenant_mib = $UPLOAD_BUFFER_TENANT_MIB
read_ahead_mib = $READ_AHEAD_MIB
read_ahead_total_mib = $READ_AHEAD_TOTAL_MIB
read_ahead_tenant_mib = $READ_AHEAD_TENANT_MIB
[plugins.memory]
source = "bundled:memory"
memory_limit_mib = $(plugin_limit "$tenants")
TOML
  for u in $(seq 0 $((USERS - 1))); do
    printf '[[users]]\nname = "user%s"\nauthorized_keys = ["%s"]\n' "$u" "$PUBKEY" >> "$file"
    [ "$layout" != shared ] || printf 'tenant = "shared"\n' >> "$file"
  done
}

RESULTS="$WORK/results"   # layout run stage rss_kib hwm_kib anon_kib seconds plugin_kib host_kib
for layout in $TENANTS; do
  for run in $(seq "$RUNS"); do
    port=$(free_port)
    rm -rf "$WORK/state"
    write_config "$WORK/wasftp.toml" "$port" "$layout"
    RUST_LOG=warn "$BIN" serve --config "$WORK/wasftp.toml" > "$WORK/server.log" 2>&1 &
    SERVER=$!
    wait_for_port "$port"
    sleep 1
    if ! python3 bench/memory_clients.py --port "$port" --pid "$SERVER" --key "$WORK/client_key" \
        --users "$USERS" --conns-per-user "$CONNS_PER_USER" --size-kib "$SIZE_KIB" \
        --write-kib "$WRITE_KIB" --concurrency "$CONCURRENCY" > "$WORK/run.out"; then
      echo "$layout run $run: some connections or requests failed:" >&2
      cat "$WORK/run.out" >&2
      echo "server log (last lines):" >&2; tail -20 "$WORK/server.log" >&2
      exit 1
    fi
    awk -v l="$layout" -v r="$run" '$1 == "stage" { print l, r, $2, $3, $4, $5, $6, $7, $3 - $7 }' "$WORK/run.out" >> "$RESULTS"
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
    if grep -qiE 'warn|error' "$WORK/server.log"; then
      echo "$layout run $run: server log has warnings:" >&2; grep -iE 'warn|error' "$WORK/server.log" | sort | uniq -c | head >&2
    fi
    echo "$layout run $run done" >&2
  done
done

# med LAYOUT STAGE COLUMN: the median over runs (column 4 = RSS, 5 = HWM, 6 = RssAnon,
# 7 = seconds the stage took, 8 = RSS in guest linear memories, 9 = the rest)
med() { awk -v l="$1" -v s="$2" -v c="$3" '$1 == l && $3 == s { print $c }' "$RESULTS" | median; }
mib() { echo "scale=0; ($1 + 512) / 1024" | bc; }

STAGES="before_login logged_in sftp_open_idle uploads_in_progress uploads_closed disconnected_5s"
echo
echo "$CONNS connections ($USERS users x $CONNS_PER_USER), each uploading $SIZE_KIB KiB in $WRITE_KIB KiB WRITEs; median of $RUNS runs"
for layout in $TENANTS; do
  tenants=$([ "$layout" = shared ] && echo 1 || echo "$USERS")
  limit=$(plugin_limit "$tenants")
  upload=$(min $((CONNS * UPLOAD_BUFFER_MIB)) $((tenants * UPLOAD_BUFFER_TENANT_MIB)) "$UPLOAD_BUFFER_TOTAL_MIB")
  ahead=$(min $((CONNS * READ_AHEAD_MIB)) $((tenants * READ_AHEAD_TENANT_MIB)) "$READ_AHEAD_TOTAL_MIB")
  plugin=$((tenants * limit))
  budget=$((upload + ahead + plugin))
  data=$((CONNS * SIZE_KIB / 1024))
  echo
  echo "### $layout: $tenants tenant(s)"
  echo
  echo "| stage | RSS MiB | HWM MiB | of RSS: plugin memory MiB | of RSS: host MiB | RSS / budget | stage took s |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for stage in $STAGES; do
    rss=$(med "$layout" "$stage" 4); hwm=$(med "$layout" "$stage" 5)
    secs=$(med "$layout" "$stage" 7); guest=$(med "$layout" "$stage" 8); host=$(med "$layout" "$stage" 9)
    printf '| %s | %s | %s | %s | %s | %.2f | %s |\n' "$stage" "$(mib "$rss")" "$(mib "$hwm")" "$(mib "$guest")" \
      "$(mib "$host")" "$(echo "$rss / 1024 / $budget" | bc -l)" "$secs"
  done
  base=$(med "$layout" before_login 4)
  per_login=$(( ($(med "$layout" logged_in 4) - base) / CONNS ))
  per_sftp=$(( ($(med "$layout" sftp_open_idle 4) - base) / CONNS ))
  peak=$(med "$layout" uploads_in_progress 5)
  echo
  echo "Budgets that apply (MiB):"
  echo "- upload buffers: min($CONNS x upload_buffer_mib $UPLOAD_BUFFER_MIB, $tenants x upload_buffer_tenant_mib $UPLOAD_BUFFER_TENANT_MIB, upload_buffer_total_mib $UPLOAD_BUFFER_TOTAL_MIB) = $upload"
  echo "- read-ahead: min($CONNS x read_ahead_mib $READ_AHEAD_MIB, $tenants x read_ahead_tenant_mib $READ_AHEAD_TENANT_MIB, read_ahead_total_mib $READ_AHEAD_TOTAL_MIB) = $ahead (no reads here)"
  echo "- memory plugin: $tenants instance(s) x memory_limit_mib $limit = $plugin (holds the uploads' $data MiB, then the files)"
  echo "- total: $budget; peak (HWM) with uploads in progress: $(mib "$peak") MiB = $(printf '%.2f' "$(echo "$peak / 1024 / $budget" | bc -l)") of it"
  echo "- per connection over before_login: $per_login KiB logged in, $per_sftp KiB with an SFTP channel open"
  echo "- file data uploaded: $data MiB; peak minus before_login: $(mib $((peak - base))) MiB"
done
