# lftp (its sftp protocol over the OpenSSH client) against wasftp: mirror a
# tree of 500 files in nested directories up, mirror it back, compare.
set -euo pipefail
cd "$WORK"
mkdir -p up
for d in $(seq 1 10); do
  for s in $(seq 1 5); do
    mkdir -p "up/dir$d/sub$s"
    for f in $(seq 1 10); do
      head -c $(( (d * 7919 + s * 104729 + f * 1299709) % 65536 )) /dev/urandom > "up/dir$d/sub$s/file$f.bin"
    done
  done
done
test "$(find up -type f | wc -l)" -eq 500

lftp_run() {
  lftp -c "set sftp:connect-program 'ssh -a -x $SSH_OPTS'; \
    set net:max-retries 1; set net:timeout 30; set cmd:fail-exit yes; \
    open -u $WASFTP_USER, -p $WASFTP_PORT sftp://127.0.0.1; $1"
}
lftp_run "mirror -R --parallel=4 up /tree"
lftp_run "mirror --parallel=4 /tree down"
diff -r up down
echo "lftp ok"
