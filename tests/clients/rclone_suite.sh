# rclone's sftp backend against wasftp: copy a tree up and down, check both
# ways by content.
set -euo pipefail
cd "$WORK"
mkdir -p up/a/b up/c
for i in $(seq 1 40); do head -c $((i * 3001)) /dev/urandom > "up/a/b/f$i"; done
head -c $((20 << 20)) /dev/urandom > up/c/big.bin
echo hello > up/hello.txt

export RCLONE_CONFIG=/dev/null
remote=":sftp,host=127.0.0.1,port=$WASFTP_PORT,user=$WASFTP_USER,key_file=$WASFTP_KEY:"
flags=(--retries 1 --low-level-retries 2 --contimeout 30s --timeout 60s)
rclone copy "${flags[@]}" up "${remote}/tree"
rclone check "${flags[@]}" --download up "${remote}/tree"
rclone copy "${flags[@]}" "${remote}/tree" down
diff -r up down
rclone check "${flags[@]}" --download down "${remote}/tree"
echo "rclone ok"
