"""One paramiko session that keeps uploading and downloading until a stop
file appears (the hot-swap test swaps the plugin meanwhile). Every file is
read back and compared by md5, and so is one written earlier; the session
never reconnects. Prints `ok OPS` and exits 0, or prints what failed and
exits 1. Arguments: NAME STOP_FILE."""
import random
import os
import sys

from common import connect, data, md5


def main():
    name, stop = sys.argv[1], sys.argv[2]
    rng = random.Random(name)
    transport, sftp = connect()
    folder = f"/swap-{name}"
    sftp.mkdir(folder)
    written = {}
    ops = 0
    n = 0
    while not os.path.exists(stop) or n < 3:
        n += 1
        size = rng.choice([0, 1, 4096, 70_000, 300_000, 1_500_000])
        body = data(size, f"{name}-{n}")
        path = f"{folder}/f{n}"
        with sftp.open(path, "wb") as f:
            f.set_pipelined(True)
            f.write(body)
        ops += 1
        with sftp.open(path, "rb") as f:
            got = f.read()
        ops += 1
        if md5(got) != md5(body):
            print(f"FAIL {path}: read back {len(got)} bytes, md5 {md5(got)}, wrote {size} bytes md5 {md5(body)}")
            sys.exit(1)
        written[path] = md5(body)
        # One written earlier, still intact.
        old = rng.choice(list(written))
        with sftp.open(old, "rb") as f:
            got = md5(f.read())
        ops += 1
        if got != written[old]:
            print(f"FAIL {old}: changed since it was written")
            sys.exit(1)
        if len(written) > 8:
            gone = rng.choice(list(written))
            sftp.remove(gone)
            del written[gone]
            ops += 1
    listed = {f"{folder}/{e}" for e in sftp.listdir(folder)}
    if listed != set(written):
        print(f"FAIL listing {folder}: {sorted(listed)} != {sorted(written)}")
        sys.exit(1)
    sftp.close()
    transport.close()
    print(f"ok {ops}")


if __name__ == "__main__":
    main()
