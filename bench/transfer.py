"""Transfer benchmark: shelflife's S3 store against rclone, same moto server, same data.

    .venv/bin/python bench/transfer.py [--repeat 3] [--small]

Measures 2,000 x 64 KiB puts, 8 x 32 MiB puts, a listing of 20,000 keys and a bulk
delete of 2,000 keys. For each: wall time and client CPU (shelflife: this process's CPU,
obstore's I/O threads included; rclone: the child's CPU from getrusage). moto's own CPU
is excluded from both; it is the bottleneck on wall time, so client CPU is the figure that
carries over to real S3. rclone runs with --transfers 16 --s3-no-head --s3-no-check-bucket
(without them it HEADs after every PUT) and its default checkers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port, make_s3_bucket, wait_for_port  # noqa: E402

from shelflife.config.model import TierConfig  # noqa: E402
from shelflife.stores import ObstoreStore, open_store  # noqa: E402

CONCURRENCY = 16


@dataclass
class Figure:
    wall: float
    cpu: float


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port: the process and its endpoint."""
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, moto, "moto_server")
    return moto, f"http://127.0.0.1:{port}"


def rclone_env(endpoint: str) -> dict[str, str]:
    """rclone's remote "moto" for the S3 server at ``endpoint`` (AWS_CA_BUNDLE breaks 1.60)."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(
        {
            "RCLONE_CONFIG_MOTO_TYPE": "s3",
            "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
            "RCLONE_CONFIG_MOTO_ENDPOINT": endpoint,
            "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": "testing",
            "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": "testing",
            "RCLONE_CONFIG_MOTO_REGION": "us-east-1",
        }
    )
    return env


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_rclone(args: list[str], env: dict[str, str]) -> Figure:
    before_cpu, start = child_cpu(), time.perf_counter()
    subprocess.run(["rclone", *args], env=env, check=True, capture_output=True)
    return Figure(time.perf_counter() - start, child_cpu() - before_cpu)


def measure_async(work: Coroutine[Any, Any, object]) -> Figure:
    before_cpu, start = time.process_time(), time.perf_counter()
    asyncio.run(work)
    return Figure(time.perf_counter() - start, time.process_time() - before_cpu)


async def put_files(store: ObstoreStore, files: list[Path], prefix: str) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(path: Path) -> None:
        async with semaphore:
            await store.put(f"{prefix}/{path.name}", path)

    await asyncio.gather(*(one(path) for path in files))


async def list_all(store: ObstoreStore, prefix: str) -> int:
    return sum([len(chunk) async for chunk in store.list(prefix)])


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True)
    files = []
    for i in range(count):
        path = folder / f"f{i:05d}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median printed)")
    parser.add_argument("--small", action="store_true", help="a quick run at 1/10 of the sizes")
    options = parser.parse_args()
    if not shutil.which("rclone"):
        sys.exit("rclone is not installed: apt-get install rclone")
    scale = 10 if options.small else 1
    n_small, n_list, n_delete = 2000 // scale, 20000 // scale, 2000 // scale
    n_large = max(1, 8 // scale)

    moto, endpoint = start_moto()
    env = rclone_env(endpoint)
    results: dict[str, dict[str, list[Figure]]] = {}
    work = Path(tempfile.mkdtemp(prefix="shelflife-bench-"))
    try:
        small = make_files(work / "small", n_small, 64 * 1024)
        large = make_files(work / "large", n_large, 32 * 1024 * 1024)
        for _ in range(options.repeat):
            for name, pair in one_round(endpoint, env, work, small, large, n_list, n_delete):
                results.setdefault(name, {"shelflife": [], "rclone": []})
                results[name]["shelflife"].append(pair[0])
                results[name]["rclone"].append(pair[1])
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    report(results, options.repeat)


def one_round(
    endpoint: str,
    env: dict[str, str],
    work: Path,
    small: list[Path],
    large: list[Path],
    n_list: int,
    n_delete: int,
) -> list[tuple[str, tuple[Figure, Figure]]]:
    """Every case once, on a fresh bucket: (case, (shelflife, rclone)) pairs."""
    bucket = make_s3_bucket(endpoint)
    store = open_store(
        TierConfig(
            url=f"s3://{bucket}",
            endpoint=endpoint,
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
    )
    flags = ["--transfers", str(CONCURRENCY), "--s3-no-head", "--s3-no-check-bucket"]
    round_id = uuid.uuid4().hex[:6]
    figures = []
    for label, files in (
        (f"put {len(small)} x 64 KiB", small),
        (f"put {len(large)} x 32 MiB", large),
    ):
        prefix = f"{label.split()[1]}-{round_id}"
        ours = measure_async(put_files(store, files, prefix))
        theirs = measure_rclone(
            ["copy", str(files[0].parent), f"moto:{bucket}/r-{prefix}", *flags], env
        )
        figures.append((label, (ours, theirs)))

    listing = f"list-{round_id}"
    asyncio.run(_fill_empty(store, listing, n_list))
    counted: list[int] = []
    ours = measure_async(_count_into(store, listing, counted))
    assert counted == [n_list], counted
    theirs = measure_rclone(["lsf", "-R", "--files-only", f"moto:{bucket}/{listing}"], env)
    figures.append((f"list {n_list} keys", (ours, theirs)))

    asyncio.run(_fill_empty(store, f"del-a-{round_id}", n_delete))
    asyncio.run(_fill_empty(store, f"del-b-{round_id}", n_delete))
    keys = [f"del-a-{round_id}/k{i:06d}" for i in range(n_delete)]
    ours = measure_async(store.delete_many(keys))
    theirs = measure_rclone(
        ["delete", f"moto:{bucket}/del-b-{round_id}", "--checkers", str(CONCURRENCY)], env
    )
    figures.append((f"bulk delete {n_delete}", (ours, theirs)))
    return figures


async def _fill_empty(store: ObstoreStore, prefix: str, count: int) -> None:
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with semaphore:
            await store.put(f"{prefix}/k{i:06d}", b"")

    await asyncio.gather(*(one(i) for i in range(count)))


async def _count_into(store: ObstoreStore, prefix: str, counted: list[int]) -> None:
    counted.append(await list_all(store, prefix))


def report(results: dict[str, dict[str, list[Figure]]], repeat: int) -> None:
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, median of {repeat}"
    )
    version = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout
    print(
        f"reference: {version.splitlines()[0] if version else 'rclone'}; server: moto on loopback"
    )
    header = (
        f"{'case':<22} {'shelflife wall':>14} {'CPU':>7} {'rclone wall':>12} {'CPU':>7} "
        f"{'wall ratio':>10} {'CPU ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, sides in results.items():
        ours = Figure(
            statistics.median(f.wall for f in sides["shelflife"]),
            statistics.median(f.cpu for f in sides["shelflife"]),
        )
        theirs = Figure(
            statistics.median(f.wall for f in sides["rclone"]),
            statistics.median(f.cpu for f in sides["rclone"]),
        )
        print(
            f"{name:<22} {ours.wall:>13.2f}s {ours.cpu:>6.2f}s {theirs.wall:>11.2f}s "
            f"{theirs.cpu:>6.2f}s {theirs.wall / ours.wall:>9.2f}x "
            f"{theirs.cpu / max(ours.cpu, 1e-6):>8.2f}x"
        )
    print("ratios are rclone / shelflife: above 1 means shelflife is faster or cheaper")


if __name__ == "__main__":
    main()
