"""paramiko against a running wasftp server: the cases named on the command line.

Connection details come from the environment (WASFTP_PORT, WASFTP_USER,
WASFTP_PASSWORD). Every socket operation has a timeout, so a stalled server
fails a case instead of hanging it. Exit status 0 only when every case passed.
"""
import io
import sys
import time
import traceback

from common import connect, data, md5


def case_put_pipelined(sftp):
    """SFTPClient.put pipelines its WRITEs: repeated at several sizes, it must never stall."""
    for size in (1 << 20, 3 << 20, 8 << 20, (8 << 20) + 12345):
        payload = data(size, size)
        for attempt in range(8):
            name = f"put-{size}-{attempt}.bin"
            sftp.putfo(io.BytesIO(payload), name)
            assert sftp.stat(name).st_size == size, (name, sftp.stat(name).st_size)
        back = io.BytesIO()
        sftp.getfo(name, back)
        assert md5(back.getvalue()) == md5(payload), name


def case_big_round_trip(sftp):
    """64 MiB up and down with SFTPClient.put/get (pipelined, prefetching)."""
    payload = data(64 << 20, 64)
    sftp.putfo(io.BytesIO(payload), "big.bin")
    assert sftp.stat("big.bin").st_size == len(payload)
    back = io.BytesIO()
    sftp.getfo("big.bin", back)
    assert md5(back.getvalue()) == md5(payload)


def case_prefetch(sftp):
    """Deep pipelining: prefetch() queues a READ for every chunk of the file at once."""
    payload = data(24 << 20, 24)
    sftp.putfo(io.BytesIO(payload), "pre.bin")
    for attempt in range(3):
        with sftp.open("pre.bin", "rb") as f:
            f.prefetch()
            got = f.read()
        assert md5(got) == md5(payload), attempt


def case_read_modify_write(sftp):
    """open("r+"): read, seek, overwrite in place, read back before and after close."""
    sftp.putfo(io.BytesIO(b"hello world"), "rmw.txt")
    with sftp.open("rmw.txt", "r+") as f:
        assert f.read(5) == b"hello"
        f.seek(6)
        f.write(b"WORLD!")
        f.flush()
        f.seek(0)
        assert f.read() == b"hello WORLD!"
    with sftp.open("rmw.txt", "r") as f:
        assert f.read() == b"hello WORLD!"


def case_truncate_then_write(sftp):
    """truncate(0) then write on a handle opened "w", over an existing file."""
    sftp.putfo(io.BytesIO(b"a much longer previous content"), "tw.txt")
    with sftp.open("tw.txt", "w") as f:
        f.truncate(0)
        f.write(b"hello")
    with sftp.open("tw.txt", "r") as f:
        assert f.read() == b"hello"
    # Truncating what was just written shrinks it; extending pads with zeros.
    with sftp.open("tw2.txt", "w") as f:
        f.write(b"0123456789")
        f.flush()
        f.truncate(4)
        f.seek(4)
        f.write(b"ab")
        f.flush()
        f.truncate(8)
    with sftp.open("tw2.txt", "r") as f:
        got = f.read()
    assert got == b"0123ab\0\0", got


def case_stat_after_open(sftp):
    """A file is there (size 0, then its size so far) from open("w") on."""
    with sftp.open("fresh.txt", "w") as f:
        assert sftp.stat("fresh.txt").st_size == 0
        f.write(b"12345")
        f.flush()
        assert sftp.stat("fresh.txt").st_size == 5
        assert "fresh.txt" in sftp.listdir(".")
    assert sftp.stat("fresh.txt").st_size == 5


def case_namespace(sftp):
    """mkdir, listdir_attr, rename, posix_rename over an existing file, remove, rmdir."""
    sftp.mkdir("d")
    sftp.putfo(io.BytesIO(b"one"), "d/a")
    sftp.putfo(io.BytesIO(b"two!"), "d/b")
    attrs = {a.filename: a for a in sftp.listdir_attr("d")}
    assert sorted(attrs) == ["a", "b"], attrs
    assert attrs["b"].st_size == 4
    sftp.rename("d/a", "d/c")
    try:
        sftp.rename("d/c", "d/b")
        raise AssertionError("rename over an existing file must fail (SFTP v3)")
    except IOError:
        pass
    sftp.posix_rename("d/c", "d/b")
    with sftp.open("d/b") as f:
        assert f.read() == b"one"
    assert sorted(sftp.listdir("d")) == ["b"]
    try:
        sftp.rmdir("d")
        raise AssertionError("rmdir of a non-empty directory must fail")
    except IOError:
        pass
    sftp.remove("d/b")
    sftp.rmdir("d")
    assert "d" not in sftp.listdir(".")


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    names = sys.argv[1:] or sorted(CASES)
    failed = 0
    for name in names:
        transport, sftp = connect()
        started = time.monotonic()
        try:
            CASES[name](sftp)
            print(f"ok {name} ({time.monotonic() - started:.2f}s)")
        except Exception:
            failed += 1
            print(f"FAILED {name} ({time.monotonic() - started:.2f}s)")
            traceback.print_exc()
        finally:
            sftp.close()
            transport.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
