"""What reading copies' stamps costs a scan: a first scan of an S3 bucket beside a rescan
and a plain listing.

    .venv/bin/python bench/scan_stamps.py [--sizes 2000,20000] [--repeat 1]

For each size N: one moto S3 server on loopback, a bucket holding N one-byte objects, half
of them carrying the metadata a migration writes on its copies (``mtime`` in seconds since
the epoch and ``shelflife_created`` in ISO 8601). Measured, each as wall time:

- ``shelflife scan`` on an empty SQLite catalog (a first scan, or a catalog rebuilt after
  loss): the listing plus one HEAD per object, 32 at a time, to read its stamps;
- ``shelflife scan`` again on the same catalog: every object is known, no HEAD at all;
- a plain obstore listing of the same keys in this process, no catalog (the floor).

For both scans also the scan's own CPU (from ``wait4``) and moto's CPU over the same
interval: moto is one Python process, and when it is busy a whole core the HEAD rate is
moto's, not shelflife's; the scan's CPU is the figure that carries over to real S3.

After each first scan the catalog's ``created_at`` of a sample of 20 objects with metadata
must equal the ``shelflife_created`` they carry, and of 20 without it must not come from
any metadata (asserted): the bench measures a feature that did its work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import obstore as obs
import psutil
from obstore.store import S3Store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import make_s3_bucket, s3_tier  # noqa: E402

from bench.transfer import start_moto  # noqa: E402
from shelflife.catalog.schema import to_micros  # noqa: E402

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")
PREFIX = "pre"
FILL_CONCURRENCY = 32
SAMPLE = 20
# Instants far apart, so a created_at cannot come from the wrong one by accident: created
# in 2022, modified in 2023 (the migration's metadata), written today (Last-Modified).
CREATED_BASE = datetime(2022, 1, 1, tzinfo=UTC)
MTIME_BASE = 1_700_000_000


@dataclass
class Scan:
    wall: float
    cpu: float  # the scan process's user + system time
    server_cpu: float  # moto's over the same interval


@dataclass
class Figures:
    first: Scan
    rescan: Scan
    listing: float


def key_of(i: int) -> str:
    return f"d{i % 100:02d}/f{i:07d}.bin"


def created_of(i: int) -> datetime:
    return CREATED_BASE + timedelta(seconds=i, microseconds=i % 1000)


def stamped(i: int) -> bool:
    return i % 2 == 0


def open_bucket(endpoint: str, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        prefix=PREFIX,
        config={
            "endpoint": endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
        client_options={"allow_http": True},
    )


async def fill(store: S3Store, n: int) -> None:
    """N one-byte objects, every second one with the metadata a migration's copy carries."""
    semaphore = asyncio.Semaphore(FILL_CONCURRENCY)

    async def one(i: int) -> None:
        attributes = None
        if stamped(i):
            attributes = {
                "mtime": f"{MTIME_BASE + i}.000000000",
                "shelflife_created": created_of(i).isoformat(),
            }
        async with semaphore:
            await obs.put_async(store, key_of(i), b"x", attributes=attributes)

    await asyncio.gather(*(one(i) for i in range(n)))


def listing(store: S3Store) -> tuple[float, int]:
    start = time.perf_counter()
    found = sum(len(chunk) for chunk in obs.list(store, None, chunk_size=1000))
    return time.perf_counter() - start, found


def write_config(work: Path, endpoint: str, bucket: str) -> None:
    tier = s3_tier(endpoint, bucket, PREFIX)
    lines = ["[catalog]", 'url = "sqlite:///catalog.db"', "[tiers.cloud]"]
    lines += [f'{name} = "{value}"' for name, value in tier.items()]
    (work / "shelflife.toml").write_text("\n".join(lines) + "\n")


def cpu_of(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def scan(work: Path, moto: psutil.Process) -> Scan:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    # Output goes to a file, read after wait4: a pipe would block the child past 64 KiB.
    with tempfile.TemporaryFile() as errors:
        server_before, start = cpu_of(moto), time.perf_counter()
        process = subprocess.Popen(
            [SHELFLIFE, "scan"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall, server = time.perf_counter() - start, cpu_of(moto) - server_before
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise RuntimeError(f"shelflife scan failed: {errors.read().decode()[-2000:]}")
    return Scan(wall, usage.ru_utime + usage.ru_stime, server)


def median_scan(scans: list[Scan]) -> Scan:
    return min(scans, key=lambda s: abs(s.wall - statistics.median(x.wall for x in scans)))


def check_catalog(work: Path, n: int) -> None:
    """Every object is in the catalog; sampled ones carry the created_at their metadata says."""
    with sqlite3.connect(work / "catalog.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM objects WHERE tier = 'cloud'").fetchone()
        assert count == n, (count, n)
        rows = random.Random(n)
        with_stamps = rows.sample(range(0, n, 2), min(SAMPLE, (n + 1) // 2))
        without = rows.sample(range(1, n, 2), min(SAMPLE, n // 2))
        for i in with_stamps + without:
            created, modified = conn.execute(
                "SELECT created_at, modified_at FROM objects WHERE tier = 'cloud' AND key = ?",
                (key_of(i),),
            ).fetchone()
            if stamped(i):
                assert created == to_micros(created_of(i)), (key_of(i), created)
                assert modified == (MTIME_BASE + i) * 1_000_000, (key_of(i), modified)
            else:  # no metadata: both are the write (Last-Modified), years after the stamps
                assert created == modified > to_micros(datetime(2024, 1, 1, tzinfo=UTC))


def run_size(endpoint: str, moto: psutil.Process, n: int, repeat: int) -> Figures:
    work = Path(tempfile.mkdtemp(prefix=f"shelflife-scan-stamps-{n}-"))
    try:
        bucket = make_s3_bucket(endpoint)
        store = open_bucket(endpoint, bucket)
        start = time.perf_counter()
        asyncio.run(fill(store, n))
        print(f"  {n:,} objects written in {time.perf_counter() - start:.1f} s", flush=True)
        write_config(work, endpoint, bucket)
        firsts: list[Scan] = []
        rescans: list[Scan] = []
        listings: list[float] = []
        for _ in range(repeat):
            for stale in work.glob("catalog.db*"):  # with SQLite's -wal and -shm files
                stale.unlink()
            firsts.append(scan(work, moto))
            check_catalog(work, n)
            rescans.append(scan(work, moto))
            wall, found = listing(store)
            assert found == n, (found, n)
            listings.append(wall)
            first, again = firsts[-1], rescans[-1]
            print(
                f"  first {first.wall:.2f} s (CPU {first.cpu:.2f} s, moto {first.server_cpu:.2f} s)"
                f", rescan {again.wall:.2f} s (CPU {again.cpu:.2f} s, moto "
                f"{again.server_cpu:.2f} s), listing {wall:.2f} s",
                flush=True,
            )
        return Figures(median_scan(firsts), median_scan(rescans), statistics.median(listings))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (median printed)")
    options = parser.parse_args()
    moto, endpoint = start_moto()
    results: dict[int, Figures] = {}
    try:
        for n in (int(s) for s in options.sizes.split(",")):
            print(f"N = {n:,}", flush=True)
            results[n] = run_size(endpoint, psutil.Process(moto.pid), n, options.repeat)
    finally:
        moto.terminate()
        moto.wait(10)
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"server: moto on loopback; median of {options.repeat}"
    )
    print(
        "| objects | first scan | rescan | listing | first / rescan | first / listing "
        "| HEADs/s | scan CPU (first / rescan) | moto CPU (first / rescan) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, f in results.items():
        first, again = f.first, f.rescan
        heads = n / (first.wall - again.wall) if first.wall > again.wall else float("inf")
        print(
            f"| {n:,} | {first.wall:.2f} s | {again.wall:.2f} s | {f.listing:.2f} s "
            f"| {first.wall / again.wall:.1f}× | {first.wall / f.listing:.1f}× | {heads:,.0f} "
            f"| {first.cpu:.2f} / {again.cpu:.2f} s "
            f"| {first.server_cpu:.2f} / {again.server_cpu:.2f} s |"
        )
    print("HEADs/s: objects ÷ (first scan − rescan), the rate of the extra metadata reads")


if __name__ == "__main__":
    main()
