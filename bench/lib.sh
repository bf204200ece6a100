# Helpers the bench scripts share (sourced, not run).

# apt_install COMMAND [PACKAGE]: installs PACKAGE (default COMMAND) from Debian
# when COMMAND is missing
apt_install() {
  command -v "$1" >/dev/null && return 0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${2:-$1}" >/dev/null
}

# timed_sftp measures with bc.
apt_install bc

# median: the median of the numbers on stdin, one a line
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# wait_for_port PORT: returns once something listens on 127.0.0.1:PORT (10 s at most)
wait_for_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# timed_sftp USER PORT BATCH_FILE: seconds one OpenSSH sftp batch takes
# (cipher $CIPHER, key $WORK/client_key)
timed_sftp() {
  local start end
  start=$(date +%s.%N)
  sftp -q -b "$3" -P "$2" -c "$CIPHER" -i "$WORK/client_key" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
    -o IdentitiesOnly=yes -o LogLevel=ERROR "$1@127.0.0.1" > /dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
