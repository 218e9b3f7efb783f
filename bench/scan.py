"""Scans at scale: ``shelflife scan`` of a ``file://`` tier beside ``find``.

    .venv/bin/python bench/scan.py [--sizes 100000,1000000] [--repeat 3] [--catalog postgresql]

For each size N: N one-byte files in 1,000 folders, no reference source. Measured as
separate processes (wall time, CPU and peak RSS from ``wait4``), ``--repeat`` times each:

- a **first scan**: ``shelflife scan`` into an empty catalog (every object is new);
- a **rescan** of the unchanged tier: the listing compared with the inventory, nothing
  written (the process start — interpreter, imports, catalog open — is included);
- a **rescan after changes**: 1 % of the files rewritten, 1 % deleted, 1 % added;
- the reference: ``find DIR -type f -printf '%P %s %T@ %i\\n'`` into a file (what a scan
  needs to know of each file: its path, size, modification time and inode).

Targets (issue 17): a rescan of an unchanged tier at most 2x ``find``, a first scan at
most 4x, memory flat in N. The script asserts that every scan saw N objects and that the
catalog holds exactly the files on disk afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gc import PG, SHELFLIFE, Measure, measure  # noqa: E402


def build(work: Path, n: int, catalog: str) -> None:
    tier = work / "tier"
    for folder in range(1000):
        (tier / f"d{folder:03d}").mkdir(parents=True)
    for i in range(n):
        (tier / f"d{i % 1000:03d}" / f"f{i:08d}.bin").write_bytes(b"x")
    (work / "shelflife.toml").write_text(f"""
[catalog]
url = "{catalog}"
[tiers.local]
url = "file://tier"
ref_format = "files/{{key}}"
""")


def change(work: Path, n: int, round_: int) -> None:
    """Rewrite 1 % of the files, delete 1 % and add 1 % (other ones each round)."""
    tier = work / "tier"
    for i in range(round_, n, 100):
        (tier / f"d{i % 1000:03d}" / f"f{i:08d}.bin").write_bytes(b"changed")
    for i in range(round_ + 50, n, 100):
        (tier / f"d{i % 1000:03d}" / f"f{i:08d}.bin").unlink()
    for i in range(n * (round_ + 1), n * (round_ + 1) + n // 100):
        (tier / f"d{i % 1000:03d}" / f"f{i:08d}.bin").write_bytes(b"new")


def scanned(result: Measure) -> int:
    import json

    return int(json.loads(result.output)["tiers"]["local"]["objects"])


def reset_catalog(work: Path, catalog: str) -> None:
    if catalog.startswith("sqlite"):
        for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
            (work / name).unlink(missing_ok=True)
        return
    import psycopg

    with psycopg.connect(catalog.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def catalog_count(work: Path, catalog: str) -> int:
    if catalog.startswith("sqlite"):
        with sqlite3.connect(work / "catalog.db") as conn:
            return int(conn.execute("SELECT count(*) FROM objects").fetchone()[0])
    import psycopg

    with psycopg.connect(catalog.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT count(*) FROM objects").fetchone()
        assert row is not None
        return int(row[0])


def catalog_bytes(work: Path, catalog: str) -> int:
    """The catalog's size on disk: the SQLite file (and its WAL), or PostgreSQL's tables
    and indexes."""
    if catalog.startswith("sqlite"):
        return sum(
            (work / name).stat().st_size
            for name in ("catalog.db", "catalog.db-wal")
            if (work / name).exists()
        )
    import psycopg

    with psycopg.connect(catalog.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT pg_total_relation_size('objects')").fetchone()
        assert row is not None
        return int(row[0])


SIZES: dict[int, int] = {}  # objects → bytes of catalog after a first scan


def run_size(n: int, repeat: int, catalog_kind: str) -> dict[str, list[Measure]]:
    work = Path(tempfile.mkdtemp(prefix=f"shelflife-scan-{n}-"))
    database = ""
    catalog = "sqlite:///catalog.db"
    if catalog_kind == "postgresql":
        import psycopg

        database = f"shelflife_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        catalog = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        catalog += "/" + database
    results: dict[str, list[Measure]] = {
        "find": [],
        "first scan": [],
        "rescan": [],
        "rescan, 3% changed": [],
    }
    scan = [SHELFLIFE, "scan", "--json"]
    find = "find tier -type f -printf '%P %s %T@ %i\\n' > listing.txt"
    try:
        build(work, n, catalog)
        for _ in range(repeat):
            results["find"].append(measure(find, cwd=work, shell=True))
            reset_catalog(work, catalog)
            first = measure(scan, cwd=work)
            assert scanned(first) == n, first.output
            results["first scan"].append(first)
            SIZES[n] = catalog_bytes(work, catalog)
            again = measure(scan, cwd=work)
            assert scanned(again) == n, again.output
            results["rescan"].append(again)
        for round_ in range(repeat):
            change(work, n, round_)
            changed = measure(scan, cwd=work)
            results["rescan, 3% changed"].append(changed)
            on_disk = sum(len(files) for _, _, files in os.walk(work / "tier"))
            assert scanned(changed) == on_disk, changed.output
            assert catalog_count(work, catalog) == on_disk
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if database:
            import psycopg

            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--catalog", choices=["sqlite", "postgresql"], default="sqlite")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    every = {n: run_size(n, options.repeat, options.catalog) for n in sizes}
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"catalog: {options.catalog}; median of {options.repeat} (min–max)"
    )
    print(f"{'objects':>9}  {'step':<20} {'wall':>24} {'CPU':>8} {'peak RSS':>9} {'÷ find':>7}")
    for n, results in every.items():
        reference = statistics.median(m.wall for m in results["find"])
        for name, runs in results.items():
            walls = [m.wall for m in runs]
            cpu = statistics.median(m.cpu for m in runs)
            rss = max(m.rss_mib for m in runs)
            ratio = statistics.median(walls) / reference
            print(
                f"{n:>9,}  {name:<20} {spread(walls):>24} {cpu:7.2f}s {rss:6.0f} MiB {ratio:6.2f}x"
            )
    for n, size in SIZES.items():
        print(
            f"catalog after a first scan of {n:,}: {size / 2**20:.1f} MiB ({size / n:.0f} B/object)"
        )
    if len(sizes) >= 2:
        low, high = every[sizes[0]], every[sizes[-1]]
        for name in ("first scan", "rescan"):
            grow = max(m.rss_mib for m in high[name]) / max(m.rss_mib for m in low[name])
            print(f"peak RSS of {name} grows {grow:.2f}x from {sizes[0]:,} to {sizes[-1]:,}")


if __name__ == "__main__":
    main()
