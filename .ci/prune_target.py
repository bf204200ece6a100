#!/usr/bin/env python3
"""Removes stale builds of this workspace's own crates from the shared
target directory: binaries (tests among them) not from the newest build of
their name, libraries two days older than the crate's newest build, and
incremental state but the newest few directories of each crate.

Every change to the dependency graph gives the workspace's crates and test
binaries new hashes, and cargo never removes the old ones: at ~10 GB a set,
the machine's disk filled up after a few days of runs. Dependencies from
crates.io are left alone (rebuilding them is what the cache is for).

    python3 .ci/prune_target.py TARGET_DIR
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

ARTIFACT = re.compile(r"^(?:lib)?(?P<name>[A-Za-z0-9_]+)-(?P<hash>[0-9a-f]{16})(?P<ext>\.[a-z]+)?$")
INCREMENTAL = re.compile(r"^(?P<name>[A-Za-z0-9_]+)-[0-9a-z]+$")
STALE_AFTER_SECS = 2 * 24 * 3600
# Binaries of one name built this close to its newest come from the same
# build (the `wasftp` binary and the `wasftp` library's unit tests share a
# name, and both are live).
SAME_BUILD_SECS = 2 * 3600
# A crate's library, binaries and tests each have an incremental directory.
INCREMENTAL_KEPT = 8


def workspace_names():
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
        check=True, capture_output=True, text=True,
    ).stdout
    names = set()
    for package in json.loads(out)["packages"]:
        for target in package["targets"]:
            names.add(target["name"].replace("-", "_"))
    names.discard("build_script_build")
    return names


def newest_first(paths):
    return sorted(paths, key=os.path.getmtime, reverse=True)


def prune_deps(deps, names):
    # (name, kind) -> hash -> files; a library and a test binary of one
    # crate have different hashes and are both kept.
    builds = {}
    for entry in os.listdir(deps):
        m = ARTIFACT.match(entry)
        if not m or m.group("name") not in names:
            continue
        kind = "lib" if entry.startswith("lib") or m.group("ext") in (".rlib", ".rmeta") else "bin"
        builds.setdefault((m.group("name"), kind), {}).setdefault(m.group("hash"), []).append(os.path.join(deps, entry))
    freed = 0
    for (_, kind), by_hash in builds.items():
        if len(by_hash) < 2:
            continue
        built = {h: max(os.path.getmtime(p) for p in files) for h, files in by_hash.items()}
        newest = max(built.values())
        for h, files in by_hash.items():
            if newest - built[h] <= SAME_BUILD_SECS:
                continue
            # A test binary (hundreds of MB each) is only ever run as the
            # newest build: `cargo test --workspace` builds one of each.
            # Two builds of one library may both be live (a build
            # dependency and a normal one, say): only one untouched for
            # two days since the newest goes.
            if kind == "lib" and newest - built[h] <= STALE_AFTER_SECS:
                continue
            for path in files:
                freed += os.path.getsize(path)
                os.remove(path)
    return freed


def tree_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def prune_incremental(incremental, names):
    # A crate's library and its tests each have a directory, and their
    # names do not say which is which: the newest few are kept.
    by_name = {}
    for entry in os.listdir(incremental):
        m = INCREMENTAL.match(entry)
        if m and m.group("name") in names:
            by_name.setdefault(m.group("name"), []).append(os.path.join(incremental, entry))
    freed = 0
    for dirs in by_name.values():
        for stale in newest_first(dirs)[INCREMENTAL_KEPT:]:
            freed += tree_size(stale)
            shutil.rmtree(stale, ignore_errors=True)
    return freed


def main():
    target = sys.argv[1]
    names = workspace_names()
    freed = 0
    for profile in ("debug", "release"):
        if not os.path.isdir(os.path.join(target, profile)):
            continue
        # Cargo's own lock on the profile's directory: a build running there
        # (another checkout sharing the target dir) may need what looks stale.
        with open(os.path.join(target, profile, ".cargo-lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"prune_target: a build is running in {target}/{profile}; left alone")
                continue
            deps = os.path.join(target, profile, "deps")
            if os.path.isdir(deps):
                freed += prune_deps(deps, names)
            incremental = os.path.join(target, profile, "incremental")
            if os.path.isdir(incremental):
                freed += prune_incremental(incremental, names)
    print(f"prune_target: {freed / 1e9:.1f} GB of stale workspace builds removed from {target}")


if __name__ == "__main__":
    main()
