# OpenSSH scp (SFTP mode, the default since OpenSSH 9.0) against wasftp: a
# file and a directory tree, both ways; a 64 MiB download arrives whole.
set -euo pipefail
cd "$WORK"
SCP=(scp -q -P "$WASFTP_PORT" $SSH_OPTS)
remote="$WASFTP_USER@127.0.0.1"

head -c $((64 << 20)) /dev/urandom > big.bin
"${SCP[@]}" big.bin "$remote:/big.bin"
"${SCP[@]}" "$remote:/big.bin" big.back
cmp big.bin big.back

mkdir -p tree/a/b tree/c
for i in $(seq 1 20); do head -c $((i * 1000)) /dev/urandom > "tree/a/b/f$i"; done
echo hello > tree/c/hello.txt
"${SCP[@]}" -r tree "$remote:/tree"
"${SCP[@]}" -r "$remote:/tree" back
diff -r tree back
echo "scp ok"
