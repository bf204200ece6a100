"""paramiko against the example plugins in other languages (plugins/examples):
the cases named on the command line, as in paramiko_suite.py.

quota_store: the JavaScript in-memory store, for a user whose tenant has a
quota of QUOTA_BYTES (environment). release_tree: the Python read-only tree,
seeded with releases 1.0 and 1.1 (see tests/tests/example_plugins.rs).
"""
import errno
import io
import os
import sys
import traceback

from common import connect, data, md5


def refused(what, call, want):
    """`call` must fail with an IOError whose errno is in `want`."""
    try:
        call()
    except IOError as e:
        assert e.errno in want, (what, e.errno, e)
        return
    raise AssertionError(f"{what} succeeded")


def case_quota_store(sftp):
    quota = int(os.environ["QUOTA_BYTES"])
    payload = data(3 << 20, 3)
    sftp.mkdir("inbox")
    sftp.putfo(io.BytesIO(payload), "inbox/a.bin")
    assert sftp.stat("inbox/a.bin").st_size == len(payload)
    back = io.BytesIO()
    sftp.getfo("inbox/a.bin", back)
    assert md5(back.getvalue()) == md5(payload)
    # Read-modify-write in place (the store takes writes at any offset).
    with sftp.open("inbox/a.bin", "r+") as f:
        f.seek(10)
        f.write(b"PATCHED")
    with sftp.open("inbox/a.bin", "r") as f:
        f.seek(8)
        assert f.read(11) == payload[8:10] + b"PATCHED" + payload[17:19]
    sftp.rename("inbox/a.bin", "inbox/b.bin")
    assert sorted(sftp.listdir("inbox")) == ["b.bin"], sftp.listdir("inbox")
    # Past the quota: an error, and the tenant's files are all still there.
    too_big = data(quota + (1 << 20), 9)
    try:
        sftp.putfo(io.BytesIO(too_big), "inbox/too-big.bin")
    except IOError:
        pass
    else:
        raise AssertionError(f"a file larger than the quota ({quota} bytes) was stored")
    # A failed upload is not committed, not even in part.
    assert "too-big.bin" not in sftp.listdir("inbox"), sftp.listdir("inbox")
    assert sftp.stat("inbox/b.bin").st_size == len(payload)
    for name in sftp.listdir("inbox"):
        sftp.remove(f"inbox/{name}")
    sftp.rmdir("inbox")
    assert sftp.listdir(".") == [], sftp.listdir(".")


def case_release_tree(sftp):
    assert sorted(sftp.listdir("/")) == ["1.0", "1.1", "latest"], sftp.listdir("/")
    assert sftp.readlink("/latest").strip("/") == "1.1", sftp.readlink("/latest")
    back = io.BytesIO()
    sftp.getfo("/latest/README.txt", back)
    assert back.getvalue() == b"hello again", back.getvalue()
    back = io.BytesIO()
    sftp.getfo("/1.0/README.txt", back)
    assert back.getvalue() == b"hello", back.getvalue()
    back = io.BytesIO()
    sftp.getfo("/1.1/bin/tool.bin", back)
    assert back.getvalue() == bytes(range(256)), len(back.getvalue())
    assert sftp.stat("/1.1/bin/tool.bin").st_size == 256
    denied = (errno.EACCES,)
    refused("put", lambda: sftp.putfo(io.BytesIO(b"x"), "/1.1/new.txt"), denied)
    refused("mkdir", lambda: sftp.mkdir("/2.0"), denied)
    refused("remove", lambda: sftp.remove("/1.0/README.txt"), denied)
    refused("rename", lambda: sftp.rename("/1.0/README.txt", "/1.0/moved.txt"), denied)
    back = io.BytesIO()
    sftp.getfo("/1.0/README.txt", back)
    assert back.getvalue() == b"hello", "a refused write changed the tree"


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    names = sys.argv[1:] or sorted(CASES)
    failed = []
    for name in names:
        transport, sftp = connect()
        try:
            CASES[name](sftp)
            print(f"ok   {name}")
        except Exception:
            failed.append(name)
            print(f"FAIL {name}")
            traceback.print_exc()
        finally:
            transport.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
