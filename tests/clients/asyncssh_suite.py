"""asyncssh against a running wasftp server: the cases named on the command line.

Connection details come from the environment (WASFTP_PORT, WASFTP_USER,
WASFTP_PASSWORD). Every case runs under a timeout. Exit status 0 only when
every case passed.
"""
import asyncio
import os
import sys
import tempfile
import time
import traceback

import asyncssh

from common import data, md5

TIMEOUT = 120


async def case_put_get_deep(sftp, local):
    """put/get of 48 MiB with 128 requests in flight."""
    payload = data(48 << 20, 48)
    src = os.path.join(local, "src.bin")
    dst = os.path.join(local, "dst.bin")
    with open(src, "wb") as f:
        f.write(payload)
    await sftp.put(src, "deep.bin", max_requests=128)
    assert (await sftp.stat("deep.bin")).size == len(payload)
    await sftp.get("deep.bin", dst, max_requests=128)
    with open(dst, "rb") as f:
        assert md5(f.read()) == md5(payload)


async def case_makedirs_rmtree(sftp, local):
    """makedirs of a deep path, files in it, then rmtree of the whole tree."""
    await sftp.makedirs("a/b/c/d")
    await sftp.makedirs("a/b/c/d", exist_ok=True)
    for path in ("a/x", "a/b/y", "a/b/c/d/z"):
        async with sftp.open(path, "wb") as f:
            await f.write(b"content of " + path.encode())
    assert sorted(n for n in await sftp.listdir("a/b") if n not in (".", "..")) == ["c", "y"]
    await sftp.rmtree("a")
    assert not await sftp.exists("a")


async def case_copy(sftp, local):
    """copy() on the server (copy-data, served by the plugin's copy-file)."""
    assert sftp.supports_remote_copy, "copy-data is advertised"
    payload = data(5 << 20, 5)
    async with sftp.open("orig.bin", "wb") as f:
        await f.write(payload)
    await sftp.copy("orig.bin", "copy.bin", remote_only=True)
    async with sftp.open("copy.bin", "rb") as f:
        assert md5(await f.read()) == md5(payload)
    await sftp.remote_copy("orig.bin", "copy2.bin")
    assert (await sftp.stat("copy2.bin")).size == len(payload)
    # A range: 1 MiB from offset 1000 of the original, at offset 10 of a new file.
    async with sftp.open("orig.bin", "rb") as src, sftp.open("part.bin", "wb") as dst:
        await sftp.remote_copy(src, dst, src_offset=1000, src_length=1 << 20, dst_offset=10)
    async with sftp.open("part.bin", "rb") as f:
        got = await f.read()
    assert got == b"\0" * 10 + payload[1000:1000 + (1 << 20)]


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


async def run(name):
    async with asyncssh.connect(
        "127.0.0.1",
        port=int(os.environ["WASFTP_PORT"]),
        username=os.environ["WASFTP_USER"],
        password=os.environ["WASFTP_PASSWORD"],
        known_hosts=None,
        client_keys=None,
        agent_path=None,
    ) as conn:
        async with conn.start_sftp_client() as sftp:
            with tempfile.TemporaryDirectory() as local:
                await asyncio.wait_for(CASES[name](sftp, local), TIMEOUT)


def main():
    names = sys.argv[1:] or sorted(CASES)
    failed = 0
    for name in names:
        started = time.monotonic()
        try:
            asyncio.run(run(name))
            print(f"ok {name} ({time.monotonic() - started:.2f}s)")
        except Exception:
            failed += 1
            print(f"FAILED {name} ({time.monotonic() - started:.2f}s)")
            traceback.print_exc()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
