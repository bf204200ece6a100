"""Plugins by language, measured in one run (bench/languages.sh builds and
calls this): the Rust memory plugin (bundled), the JavaScript js-quota
example (componentize-js) and the Python python-tree example
(componentize-py), each in its real build.

For each: the component's size; its compile time cold (an empty cache) and
from the compiled-component cache, and its first instance's start
(instantiation, init, describe), as `wasftp plugin info` reports them; then,
served by one wasftp (release build) over loopback: the p50 of STAT over one
paramiko session, and GET MB/s of a SIZE_MIB file with OpenSSH sftp (the
time of an empty session subtracted). Medians of RUNS runs.

python-tree serves content from its config, so its big file is given as
base64 in the server's config (the plugin info run gets a small tree).
"""
import base64
import os
import re
import statistics
import subprocess
import sys
import time

import paramiko

BIN = os.environ["BIN"]
WORK = os.environ["WORK"]
RUNS = int(os.environ.get("RUNS", "3"))
SIZE_MIB = int(os.environ.get("SIZE_MIB", "64"))
STATS = int(os.environ.get("STATS", "500"))
CIPHER = os.environ.get("CIPHER", "aes256-gcm@openssh.com")
PORT = int(os.environ.get("WASFTP_PORT", "22432"))
KEY = os.path.join(WORK, "client_key")

PLUGINS = [
    # (language, plugin name in the config, source, info config, user)
    ("Rust (memory)", "memory", "bundled:memory", [], "rust"),
    ("JavaScript (js-quota)", "quota", os.path.join(WORK, "js-quota.wasm"), [], "js"),
    ("Python (python-tree)", "tree", os.path.join(WORK, "python-tree.wasm"), ["1.0:/README.txt=hello"], "python"),
]


def seconds(text):
    """A Rust Duration's debug form (`7.83s`, `89.12ms`, `412.3µs`) in seconds."""
    value, unit = re.fullmatch(r"([0-9.]+)(s|ms|µs|us|ns)", text).groups()
    return float(value) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[unit]


def plugin_info(source, config, cache):
    args = [BIN, "plugin", "info", source] + [a for kv in config for a in ("--config", kv)]
    env = dict(os.environ, XDG_CACHE_HOME=cache, RUST_LOG="warn")
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    size = int(re.search(r"\(([0-9]+) bytes\)", out).group(1))
    compiled = re.search(r"compiled:\s+in (\S+)( \(from the cache\))?", out)
    started = seconds(re.search(r"started:\s+in (\S+)", out).group(1))
    return size, seconds(compiled.group(1)), bool(compiled.group(2)), started


def sftp_batch(user, batch):
    path = os.path.join(WORK, "batch")
    with open(path, "w") as f:
        f.write(batch)
    start = time.monotonic()
    subprocess.run(
        ["sftp", "-q", "-b", path, "-P", str(PORT), "-c", CIPHER, "-i", KEY,
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", f"{user}@127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def stat_p50(user, path):
    transport = paramiko.Transport(("127.0.0.1", PORT))
    transport.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(KEY))
    sftp = paramiko.SFTPClient.from_transport(transport)
    sftp.stat(path)
    times = []
    for _ in range(STATS):
        start = time.perf_counter()
        sftp.stat(path)
        times.append(time.perf_counter() - start)
    transport.close()
    return statistics.median(times)


def wait_for_port():
    import socket
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not start")


def main():
    big = os.path.join(WORK, "big")
    with open(big, "wb") as f:
        f.write(os.urandom(SIZE_MIB << 20))
    with open(big, "rb") as f:
        big_b64 = base64.b64encode(f.read()).decode()
    public_key = open(KEY + ".pub").read().strip()

    infos = {}
    for language, _, source, config, _ in PLUGINS:
        runs = []
        for run in range(RUNS):
            cache = os.path.join(WORK, f"cache-{run}")
            cold = plugin_info(source, config, cache)
            warm = plugin_info(source, config, cache)
            assert not cold[2] and warm[2], (language, cold, warm)
            runs.append((cold[0], cold[1], warm[1], warm[3]))
        infos[language] = runs

    config = [
        f'listen = "127.0.0.1:{PORT}"',
        f'state_dir = "{WORK}/state"',
        "[plugins.memory]", 'source = "bundled:memory"', "memory_limit_mib = 1024",
        "[plugins.quota]", f'source = "{PLUGINS[1][2]}"', "memory_limit_mib = 1024",
        "[plugins.tree]", f'source = "{PLUGINS[2][2]}"', "memory_limit_mib = 2048",
        "[plugins.tree.config]", f'"1.0:/big" = "base64:{big_b64}"',
    ]
    for _, plugin, _, _, user in PLUGINS:
        config += ["[[users]]", f'name = "{user}"', f'plugin = "{plugin}"', f'authorized_keys = ["{public_key}"]']
    with open(os.path.join(WORK, "wasftp.toml"), "w") as f:
        f.write("\n".join(config) + "\n")
    server = subprocess.Popen(
        [BIN, "serve", "--config", os.path.join(WORK, "wasftp.toml")],
        env=dict(os.environ, RUST_LOG="warn", XDG_CACHE_HOME=os.path.join(WORK, "cache-0")),
        stdout=open(os.path.join(WORK, "wasftp.log"), "w"), stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port()
        sftp_batch("rust", f"put {big} /big\n")
        sftp_batch("js", f"put {big} /big\n")
        served = {}
        for language, _, _, _, user in PLUGINS:
            path = "/1.0/big" if user == "python" else "/big"
            stats, rates = [], []
            for _ in range(RUNS):
                stats.append(stat_p50(user, path))
                empty = sftp_batch(user, "pwd\n")
                whole = sftp_batch(user, f"get {path} {WORK}/got\n")
                assert os.path.getsize(f"{WORK}/got") == SIZE_MIB << 20, language
                rates.append(SIZE_MIB * 1.048576 / max(whole - empty, 1e-6))
            served[language] = (statistics.median(stats), statistics.median(rates))
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"Plugins by language: medians of {RUNS} runs; STAT p50 of {STATS}; GET of {SIZE_MIB} MiB, cipher {CIPHER}")
    print()
    print("| plugin | component | compile cold | compile from cache | first instance | STAT p50 | GET MB/s |")
    print("|---|---|---|---|---|---|---|")
    for language, *_ in PLUGINS:
        runs = infos[language]
        size = runs[0][0]
        cold, warm, start = (statistics.median(r[i] for r in runs) for i in (1, 2, 3))
        stat, rate = served[language]
        print(f"| {language} | {size / 1e6:.1f} MB | {cold:.2f} s | {warm * 1e3:.0f} ms | {start * 1e3:.0f} ms "
              f"| {stat * 1e6:.0f} µs | {rate:.0f} |")


if __name__ == "__main__":
    main()
