#!/usr/bin/env python3
"""Client side of bench/memory.sh: many logged-in SFTP sessions, each with an
upload in progress, and the server's memory at each stage.

Opens USERS x CONNS_PER_USER SSH connections (user0..), logs each in with one
key, opens an SFTP channel on each, opens a file for writing and writes
SIZE_KIB in WRITE_KIB WRITEs without closing it, then CLOSEs every upload and
disconnects. After each stage it prints the server's memory from
/proc/PID/status:

    stage NAME VmRSS_KiB VmHWM_KiB RssAnon_KiB SECONDS_THE_STAGE_TOOK PLUGIN_KIB

PLUGIN_KIB is what of VmRSS is in guest linear memories (from /proc/PID/smaps,
see plugin_rss). Memory is read --settle s after a stage ends
(5 s after disconnecting). At the end it prints "errors N" and exits 1 if any
connection or request failed.
"""

import argparse
import asyncio
import logging
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # cryptography's DSA deprecation, via asyncssh
import asyncssh  # noqa: E402


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                fields[key] = int(value.split()[0])
    fields["plugin"] = plugin_rss(pid)
    return fields


# wasmtime (48, on-demand and pooling allocators alike) reserves each linear
# memory with PROT_NONE guards around it: a guard before it (32 MiB), the
# accessible part (the memory's current size: its zeroed start, the initial
# image from a memfd, then anonymous pages), then the rest of its 4 GiB
# reservation and a guard after it, PROT_NONE. Neighbouring guards may merge.
MAX_LINEAR_MEMORY = 4 << 30


def plugin_rss(pid):
    """KiB resident in guest linear memories: below each PROT_NONE mapping of
    1 GiB or more, the accessible mappings contiguous with it, back to the
    guard before them (4 GiB at most)."""
    maps = []  # [start, end, perms, rss_kib]
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                try:
                    start, end = (int(x, 16) for x in head[0].split("-"))
                except ValueError:
                    continue
                maps.append([start, end, head[1], 0])
            elif line.startswith("Rss:") and maps:
                maps[-1][3] = int(line.split()[1])
    total = 0
    for i, (start, end, perms, _) in enumerate(maps):
        if perms != "---p" or end - start < 1 << 30:
            continue
        j = i - 1
        while (j >= 0 and maps[j][1] == maps[j + 1][0] and maps[j][2] != "---p"
               and start - maps[j][0] <= MAX_LINEAR_MEMORY):
            total += maps[j][3]
            j -= 1
    return total


class Session:
    def __init__(self, user, index):
        self.user = user
        self.index = index
        self.conn = None
        self.sftp = None
        self.file = None


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--conns-per-user", type=int, default=100)
    p.add_argument("--size-kib", type=int, default=1024)
    p.add_argument("--write-kib", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=50,
                   help="logins in progress at once (below max_unauthenticated_per_ip)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait after a stage before reading memory")
    p.add_argument("--after-disconnect", type=float, default=5.0)
    p.add_argument("--cipher", default="aes128-gcm@openssh.com")
    a = p.parse_args()
    logging.getLogger("asyncssh").setLevel(logging.CRITICAL)

    key = asyncssh.read_private_key(a.key)
    sessions = [Session(f"user{u}", i) for u in range(a.users) for i in range(a.conns_per_user)]
    errors = []
    gate = asyncio.Semaphore(a.concurrency)
    block = b"\xa5" * (a.write_kib << 10)
    writes = a.size_kib // a.write_kib

    def report(name, seconds):
        m = memory(a.pid)
        print(f"stage {name} {m['VmRSS']} {m['VmHWM']} {m.get('RssAnon', 0)} {seconds:.2f} {m['plugin']}", flush=True)

    async def stage(name, step, sessions_):
        started = time.monotonic()

        async def one(s):
            try:
                await step(s)
            except Exception as e:  # noqa: BLE001 - counted and shown
                errors.append(f"{name} {s.user}#{s.index}: {type(e).__name__}: {e}")

        await asyncio.gather(*(one(s) for s in sessions_))
        seconds = time.monotonic() - started
        await asyncio.sleep(a.settle)
        report(name, seconds)

    async def login(s):
        async with gate:
            s.conn = await asyncssh.connect(
                "127.0.0.1", a.port, username=s.user, client_keys=[key], known_hosts=None,
                agent_path=None, encryption_algs=[a.cipher], compression_algs=None,
                login_timeout=60)

    async def start_sftp(s):
        async with gate:
            s.sftp = await s.conn.start_sftp_client()

    async def upload(s):
        # block_size=0: one WRITE per write() call, as a client streaming a file
        s.file = await s.sftp.open(f"/up-{s.user}-{s.index}", "wb", encoding=None, block_size=0)
        for i in range(writes):
            await s.file.write(block, i * len(block))

    async def close(s):
        await s.file.close()

    async def disconnect(s):
        s.conn.close()
        await s.conn.wait_closed()

    report("before_login", 0)
    await stage("logged_in", login, sessions)
    up = [s for s in sessions if s.conn]
    await stage("sftp_open_idle", start_sftp, up)
    up = [s for s in up if s.sftp]
    await stage("uploads_in_progress", upload, up)
    await stage("uploads_closed", close, [s for s in up if s.file])
    started = time.monotonic()
    await asyncio.gather(*(disconnect(s) for s in sessions if s.conn), return_exceptions=True)
    seconds = time.monotonic() - started
    await asyncio.sleep(a.after_disconnect)
    report("disconnected_5s", seconds)

    print(f"errors {len(errors)}", flush=True)
    for e in errors[:10]:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
