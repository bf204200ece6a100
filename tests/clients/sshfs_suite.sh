# sshfs (FUSE) over wasftp: what people do in a mounted folder. The mount
# point is $WORK/mnt; it is unmounted on the way out, whatever happens.
set -euo pipefail
cd "$WORK"
mkdir -p mnt local
sshfs -p "$WASFTP_PORT" "$WASFTP_USER@127.0.0.1:/" mnt \
  -o "ssh_command=ssh $SSH_OPTS" -o ServerAliveInterval=15 -o idmap=user
trap 'cd "$WORK"; fusermount3 -u mnt 2>/dev/null || umount -l mnt 2>/dev/null || true' EXIT
M="$WORK/mnt"

step() { echo "== $*"; }

step "echo > f, >>"
echo hi > "$M/f"
test "$(cat "$M/f")" = hi
echo more >> "$M/f"
test "$(cat "$M/f")" = "$(printf 'hi\nmore')"

step "truncate -s"
truncate -s 3 "$M/f"
test "$(stat -c %s "$M/f")" -eq 3
truncate -s 100 "$M/f"
test "$(stat -c %s "$M/f")" -eq 100
printf 'hi\n' | cmp -n 3 - "$M/f"

step "dd conv=notrunc seek"
head -c 65536 /dev/urandom > local/g
cp local/g "$M/g"
head -c 2048 /dev/urandom > local/patch
dd if=local/patch of=local/g bs=1024 seek=10 conv=notrunc status=none
dd if=local/patch of="$M/g" bs=1024 seek=10 conv=notrunc status=none
cmp local/g "$M/g"

step "sed -i"
printf 'alpha\nbeta\ngamma\n' > "$M/s.txt"
sed -i 's/beta/BETA/' "$M/s.txt"
test "$(cat "$M/s.txt")" = "$(printf 'alpha\nBETA\ngamma')"

step "cp 32 MiB"
head -c $((32 << 20)) /dev/urandom > local/big
cp local/big "$M/big"
cmp local/big "$M/big"

step "tar -x"
mkdir -p local/tree/x/y local/tree/z
for i in $(seq 1 30); do head -c $((i * 517)) /dev/urandom > "local/tree/x/y/f$i"; done
echo z > local/tree/z/z.txt
tar -C local -cf local/tree.tar tree
mkdir "$M/untar"
tar -C "$M/untar" -xf local/tree.tar
diff -r local/tree "$M/untar/tree"

step "git init, add, commit"
git_id=(-c user.name=wasftp -c user.email=wasftp@example.invalid -c init.defaultBranch=main)
mkdir "$M/repo"
( cd "$M/repo" && git "${git_id[@]}" init -q && cp -r "$WORK/local/tree/." . \
  && git "${git_id[@]}" add -A && git "${git_id[@]}" commit -q -m first \
  && git "${git_id[@]}" log --oneline | grep -q first && git status --porcelain | wc -l | grep -qx 0 )

step "git clone into the mount"
git "${git_id[@]}" clone -q "$M/repo" local/clone-out
git "${git_id[@]}" clone -q local/clone-out "$M/cloned"
( cd "$M/cloned" && git "${git_id[@]}" fsck --no-progress && test "$(git log --oneline | wc -l)" -eq 1 )
diff -r local/tree/x "$M/cloned/x"

step "mv across directories"
mkdir -p "$M/d1" "$M/d2"
echo moved > "$M/d1/m.txt"
mv "$M/d1/m.txt" "$M/d2/m.txt"
test ! -e "$M/d1/m.txt"
test "$(cat "$M/d2/m.txt")" = moved

step "rm -r"
rm -r "$M/untar" "$M/repo" "$M/cloned" "$M/d1" "$M/d2"
test ! -e "$M/untar"
echo "sshfs ok"
