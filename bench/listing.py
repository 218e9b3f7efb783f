"""Listing a ``file://`` tier: shelflife's link-safe walk beside obstore's walk and ``find``.

    .venv/bin/python bench/listing.py [--sizes 100000,1000000]

For each size N: N small files in 1,000 folders. Measured in this process, best of three:

- shelflife's ``LocalStore.list()`` (``os.scandir``, links skipped, one ``lstat`` per file,
  keys validated, ETags as obstore spells them);
- obstore's own ``LocalStore`` listing (a Rust walk that follows links), the walk shelflife
  used before;
- ``find DIR -type f -printf '%P %s %T@\\n'`` as a separate process (the reference).

All three must agree on the number of files (asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import obstore as obs
from obstore.store import LocalStore as ObLocalStore

from shelflife.stores.local import LocalStore


def build(root: Path, count: int) -> None:
    for folder in range(1000):
        (root / f"d{folder:03}").mkdir(parents=True)
    for i in range(count):
        (root / f"d{i % 1000:03}" / f"f{i:08}.bin").write_bytes(b"x")


def shelflife_walk(root: Path) -> int:
    store = LocalStore(root)

    async def count() -> int:
        return sum([len(chunk) async for chunk in store.list()])

    return asyncio.run(count())


def obstore_walk(root: Path) -> int:
    store = ObLocalStore(root)
    return sum(len(chunk) for chunk in obs.list(store, None, chunk_size=1000))


def find(root: Path) -> int:
    out = subprocess.run(
        ["find", str(root), "-type", "f", "-printf", "%P %s %T@\n"],
        capture_output=True,
        check=True,
    ).stdout
    return out.count(b"\n")


def best_of(three: Callable[[Path], int], root: Path) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(3):
        started = time.perf_counter()
        found = three(root)
        times.append(time.perf_counter() - started)
    return min(times), found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores")
    print("| files | shelflife walk | obstore walk | find | shelflife / find | obstore / find |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        base = Path(tempfile.mkdtemp(prefix="shelflife-listing-"))
        try:
            build(base / "tier", size)
            ours, n1 = best_of(shelflife_walk, base / "tier")
            theirs, n2 = best_of(obstore_walk, base / "tier")
            reference, n3 = best_of(find, base / "tier")
            assert n1 == n2 == n3 == size, (n1, n2, n3, size)
            print(
                f"| {size:,} | {ours:.2f} s | {theirs:.2f} s | {reference:.2f} s "
                f"| {ours / reference:.1f}x | {theirs / reference:.1f}x |"
            )
        finally:
            shutil.rmtree(base)


if __name__ == "__main__":
    main()
