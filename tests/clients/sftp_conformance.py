"""The SFTP-level half of the conformance suite, through paramiko: what a
client sees, the same whatever plugin is behind the server (the host gives
every plugin the same SFTP semantics). tests/tests/sftp_conformance.rs runs
it against each plugin. The contract-level half is wasftp::conformance.

Environment: WASFTP_PORT, WASFTP_USER, WASFTP_PASSWORD; MODE is `writable`
(the cases work in a fresh directory and remove it) or `read-only` (the
cases read what the server already has: FILE, a file of FILE_SIZE bytes, and
DIR, a directory holding it). Exit status 0 only when every case passed;
each case prints ok or FAIL with what went wrong.
"""
import errno
import io
import os
import stat
import sys
import traceback
import uuid

from common import connect, data, md5

MODE = os.environ.get("MODE", "writable")


def fails(what, call, errnos=None):
    """`call` must raise IOError (with an errno in `errnos`, if given)."""
    try:
        call()
    except IOError as e:
        if errnos is not None:
            assert e.errno in errnos, f"{what}: errno {e.errno} ({e}), expected one of {errnos}"
        return
    raise AssertionError(f"{what} succeeded")


def put(sftp, path, payload):
    sftp.putfo(io.BytesIO(payload), path)


def get(sftp, path):
    out = io.BytesIO()
    sftp.getfo(path, out)
    return out.getvalue()


# ------------------------------------------------------------ writable


def w_round_trip(sftp, d):
    """A file of several chunks reads back whole; STAT gives its size."""
    payload = data((1 << 20) + 7, 1)
    put(sftp, f"{d}/a.bin", payload)
    assert sftp.stat(f"{d}/a.bin").st_size == len(payload)
    assert md5(get(sftp, f"{d}/a.bin")) == md5(payload)


def w_listing(sftp, d):
    """READDIR shows each entry once, with its kind and size."""
    sftp.mkdir(f"{d}/list")
    for i in range(70):  # more than one READDIR reply (64 names each)
        put(sftp, f"{d}/list/f{i:02}", b"x" * i)
    sftp.mkdir(f"{d}/list/sub")
    entries = {e.filename: e for e in sftp.listdir_attr(f"{d}/list")}
    assert sorted(entries) == sorted([f"f{i:02}" for i in range(70)] + ["sub"]), sorted(entries)
    assert all(entries[f"f{i:02}"].st_size == i and stat.S_ISREG(entries[f"f{i:02}"].st_mode) for i in range(70))
    assert stat.S_ISDIR(entries["sub"].st_mode)


def w_offsets(sftp, d):
    """READ at an offset, across the end (short), and past it (EOF)."""
    payload = data(100_000, 2)
    put(sftp, f"{d}/o.bin", payload)
    with sftp.open(f"{d}/o.bin", "rb") as f:
        f.seek(12_345)
        assert f.read(1000) == payload[12_345:13_345]
        f.seek(99_990)
        assert f.read(100) == payload[99_990:]
        f.seek(200_000)
        assert f.read(10) == b""


def w_missing(sftp, d):
    """A missing path is ENOENT for STAT, OPEN and OPENDIR."""
    fails("stat of a missing file", lambda: sftp.stat(f"{d}/missing"), (errno.ENOENT,))
    fails("open of a missing file", lambda: sftp.open(f"{d}/missing", "rb"), (errno.ENOENT,))
    fails("listdir of a missing directory", lambda: sftp.listdir(f"{d}/missing"), (errno.ENOENT,))


def w_wrong_kinds(sftp, d):
    """A file where a directory is expected, and the other way round."""
    sftp.mkdir(f"{d}/kd")
    put(sftp, f"{d}/kf", b"file")
    fails("listdir of a file", lambda: sftp.listdir(f"{d}/kf"))
    fails("rmdir of a file", lambda: sftp.rmdir(f"{d}/kf"))
    fails("remove of a directory", lambda: sftp.remove(f"{d}/kd"))
    fails("reading a directory", lambda: sftp.open(f"{d}/kd", "rb").read())
    assert get(sftp, f"{d}/kf") == b"file"


def w_truncate_and_append(sftp, d):
    """open "w" replaces the content; "a" appends to it."""
    put(sftp, f"{d}/t.txt", b"a much longer first content")
    with sftp.open(f"{d}/t.txt", "w") as f:
        f.write(b"short")
    assert get(sftp, f"{d}/t.txt") == b"short"
    with sftp.open(f"{d}/t.txt", "a") as f:
        f.write(b" and more")
    got = get(sftp, f"{d}/t.txt")
    assert got == b"short and more", got


def w_read_write(sftp, d):
    """open "r+": writes in the middle, read back before and after CLOSE."""
    put(sftp, f"{d}/rw.txt", b"hello world")
    with sftp.open(f"{d}/rw.txt", "r+") as f:
        f.seek(6)
        f.write(b"WORLD")
        f.seek(0)
        assert f.read() == b"hello WORLD"
    assert get(sftp, f"{d}/rw.txt") == b"hello WORLD"


def w_invisible_until_close(sftp, d):
    """An overwrite in progress: readers get the old content until CLOSE."""
    put(sftp, f"{d}/v.txt", b"old content")
    f = sftp.open(f"{d}/v.txt", "w")
    f.write(b"new content, longer")
    f.flush()
    assert get(sftp, f"{d}/v.txt") == b"old content"
    f.close()
    assert get(sftp, f"{d}/v.txt") == b"new content, longer"


def w_exclusive(sftp, d):
    """O_EXCL on an existing file fails and leaves it as it was."""
    put(sftp, f"{d}/x.txt", b"first")
    fails("an exclusive create of an existing file", lambda: sftp.open(f"{d}/x.txt", "wx"))
    assert get(sftp, f"{d}/x.txt") == b"first"


def w_rename(sftp, d):
    """RENAME moves, refuses to replace; posix-rename replaces."""
    put(sftp, f"{d}/r1", b"one")
    sftp.rename(f"{d}/r1", f"{d}/r2")
    fails("stat of the old name", lambda: sftp.stat(f"{d}/r1"), (errno.ENOENT,))
    assert get(sftp, f"{d}/r2") == b"one"
    put(sftp, f"{d}/r3", b"three")
    fails("rename onto an existing file", lambda: sftp.rename(f"{d}/r3", f"{d}/r2"))
    assert get(sftp, f"{d}/r2") == b"one"
    sftp.posix_rename(f"{d}/r3", f"{d}/r2")
    assert get(sftp, f"{d}/r2") == b"three"


def w_directories(sftp, d):
    """MKDIR, RMDIR of a non-empty directory refused, of an empty one done."""
    sftp.mkdir(f"{d}/dd")
    fails("mkdir of an existing directory", lambda: sftp.mkdir(f"{d}/dd"))
    put(sftp, f"{d}/dd/in", b"in")
    fails("rmdir of a directory with a file", lambda: sftp.rmdir(f"{d}/dd"))
    sftp.remove(f"{d}/dd/in")
    sftp.rmdir(f"{d}/dd")
    fails("stat of a removed directory", lambda: sftp.stat(f"{d}/dd"), (errno.ENOENT,))


def remove_tree(sftp, path):
    for entry in sftp.listdir_attr(path):
        child = f"{path}/{entry.filename}"
        if stat.S_ISDIR(entry.st_mode):
            remove_tree(sftp, child)
        else:
            sftp.remove(child)
    sftp.rmdir(path)


# ------------------------------------------------------------ read-only


def r_reads(sftp, d):
    """The file reads whole, at an offset, and past its end."""
    path, size = os.environ["FILE"], int(os.environ["FILE_SIZE"])
    whole = get(sftp, path)
    assert len(whole) == size == sftp.stat(path).st_size, (len(whole), size)
    with sftp.open(path, "rb") as f:
        f.seek(size // 2)
        assert f.read(7) == whole[size // 2: size // 2 + 7]
        f.seek(size + 10)
        assert f.read(10) == b""


def r_listing(sftp, d):
    """The directory lists the file with its size; STAT agrees."""
    directory, path = os.environ["DIR"], os.environ["FILE"]
    entries = {e.filename: e for e in sftp.listdir_attr(directory)}
    name = path.rsplit("/", 1)[1]
    assert name in entries, sorted(entries)
    assert entries[name].st_size == sftp.stat(path).st_size


def r_missing(sftp, d):
    fails("stat of a missing file", lambda: sftp.stat(f"/missing-{uuid.uuid4().hex}"), (errno.ENOENT,))
    fails("listdir of a missing directory", lambda: sftp.listdir(f"/missing-{uuid.uuid4().hex}"), (errno.ENOENT,))


def r_wrong_kinds(sftp, d):
    fails("listdir of a file", lambda: sftp.listdir(os.environ["FILE"]))
    fails("reading a directory", lambda: sftp.open(os.environ["DIR"], "rb").read())


def r_writes_refused(sftp, d):
    """Every write is EACCES, and nothing changes."""
    path, directory = os.environ["FILE"], os.environ["DIR"]
    before = get(sftp, path)
    denied = (errno.EACCES,)
    fails("put", lambda: put(sftp, f"{directory}/new-{uuid.uuid4().hex}", b"x"), denied)
    fails("overwrite", lambda: put(sftp, path, b"overwritten"), denied)
    fails("mkdir", lambda: sftp.mkdir(f"{directory}/new-{uuid.uuid4().hex}"), denied)
    fails("remove", lambda: sftp.remove(path), denied)
    fails("rename", lambda: sftp.rename(path, f"{directory}/moved"), denied)
    assert get(sftp, path) == before, "a refused write changed the file"


WRITABLE = [w_round_trip, w_listing, w_offsets, w_missing, w_wrong_kinds, w_truncate_and_append,
            w_read_write, w_invisible_until_close, w_exclusive, w_rename, w_directories]
READ_ONLY = [r_reads, r_listing, r_missing, r_wrong_kinds, r_writes_refused]


def main():
    transport, sftp = connect()
    cases = WRITABLE if MODE == "writable" else READ_ONLY
    base = None
    if MODE == "writable":
        base = f"/sftp-check-{uuid.uuid4().hex[:12]}"
        sftp.mkdir(base)
    failed = []
    for case in cases:
        d = None
        if base is not None:
            d = f"{base}/{case.__name__}"
            sftp.mkdir(d)
        try:
            case(sftp, d)
            print(f"ok   {case.__name__}: {case.__doc__.strip().splitlines()[0] if case.__doc__ else ''}")
        except Exception:
            failed.append(case.__name__)
            print(f"FAIL {case.__name__}")
            traceback.print_exc()
    if base is not None:
        remove_tree(sftp, base)
        left = sftp.listdir("/")
        assert base.lstrip("/") not in left, f"{base} is left"
    transport.close()
    print(f"{len(cases) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
