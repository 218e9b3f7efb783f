"""Orphan planning at scale: ``shelflife gc --dry-run`` beside ``sort | comm`` and a naive set.

    .venv/bin/python bench/gc.py [--sizes 100000,1000000] [--repeat 3] [--catalog postgresql]

For each size N: N empty files on a ``file://`` tier (in 1,000 folders), and a PostgreSQL
table whose rows reference every second one. Measured, each as a separate process, with
wall time, CPU and peak RSS (from ``wait4``), ``--repeat`` times:

- ``shelflife scan`` of the unchanged tier (the listing compared with the inventory, and
  the references counted per tier for stats);
- ``shelflife gc --dry-run --no-scan`` (the scan is measured above): reads the references
  in byte order and marks the orphans by merging them with the inventory, the plan's
  items written to the catalog as they are planned;
- the same with ``[executor] marking = "snapshot"`` (the general path: the references
  copied into the catalog, an anti-join there);
- ``sort | comm``: ``LC_ALL=C sort`` of both key lists and ``comm -23``, the lists already
  exported; and the pipeline that also exports them (``find`` + ``psql COPY``);
- a naive approach: every reference in a Python set, then a walk of the folder.

Targets (issue 17): the peak RSS of gc grows at most 1.5x from 10^5 to 10^6 objects; its
wall time is at most 2x the pipeline, and scan + gc at most 3x. All approaches must agree
on the orphan count (asserted).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
SHELFLIFE = str(Path(sys.executable).parent / "shelflife")
PG = os.environ.get("SHELFLIFE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

NAIVE = r"""
import os, sys, psycopg
root, table, url = sys.argv[1], sys.argv[2], sys.argv[3]
with psycopg.connect(url) as conn:
    refs = {row[0] for row in conn.execute(f"SELECT path FROM {table}")}
orphans = 0
for folder, _, names in os.walk(root):
    rel = os.path.relpath(folder, root)
    for name in names:
        if "files/" + (name if rel == "." else rel + "/" + name) not in refs:
            orphans += 1
print(orphans)
"""


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mib: float
    output: str


def measure(command: list[str] | str, *, cwd: Path, shell: bool = False) -> Measure:
    # Output goes to files, read after wait4: a pipe would block a child past 64 KiB.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=cwd,
            shell=shell,
            stdout=out,
            stderr=errors,
            # bytecode caches on, as after a pip install (an editable install with
            # PYTHONDONTWRITEBYTECODE recompiles every module at each start)
            env={
                **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                "LC_ALL": "C",
            },
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        errors.seek(0)
        stdout, stderr = out.read().decode(), errors.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed: {stderr[-2000:]}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout)


def build(work: Path, n: int, catalog: str = "sqlite:///catalog.db") -> str:
    import psycopg

    tier = work / "tier"
    for folder in range(1000):
        (tier / f"d{folder:03d}").mkdir(parents=True)
    for i in range(n):
        (tier / f"d{i % 1000:03d}" / f"f{i:08d}.bin").touch()
    table = f"bench_refs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, path text)")
        with conn.cursor().copy(f"COPY {table} (path) FROM STDIN") as copy:
            for i in range(0, n, 2):
                copy.write_row((f"files/d{i % 1000:03d}/f{i:08d}.bin",))
        conn.execute(f"CREATE INDEX ON {table} (path)")
        conn.execute(f"ANALYZE {table}")
    (work / "shelflife.toml").write_text(f"""
[catalog]
url = "{catalog}"
[databases.app]
url = "{PG.replace("postgresql://", "postgresql+psycopg://")}"
[tiers.local]
url = "file://tier"
create = true
ref_format = "files/{{key}}"
[[references]]
database = "app"
table = "{table}"
column = "path"
[[rules]]
id = "orphans"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 1.0
""")
    return table


def run_size(n: int, catalog: str, repeat: int) -> dict[str, list[Measure]]:
    work = Path(tempfile.mkdtemp(prefix=f"shelflife-gc-{n}-"))
    table = ""
    database = ""
    if catalog == "postgresql":
        import psycopg

        database = f"shelflife_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        catalog = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        catalog += "/" + database
    else:
        catalog = "sqlite:///catalog.db"
    results: dict[str, list[Measure]] = {}

    def note(name: str, result: Measure) -> Measure:
        results.setdefault(name, []).append(result)
        return result

    try:
        table = build(work, n, catalog)
        config = (work / "shelflife.toml").read_text()
        snapshot = work / "snapshot.toml"
        snapshot.write_text(config + '\n[executor]\nmarking = "snapshot"\n')
        measure([SHELFLIFE, "scan"], cwd=work)  # the first scan, not measured here
        expected = n - (n + 1) // 2
        export = (
            f"find tier -type f -printf '%P\\n' > objects.txt && "
            f"psql '{PG}' -qAtc \"COPY (SELECT substr(path, 7) FROM {table}) TO STDOUT\" "
            "> refs.txt"
        )
        comm = "sort objects.txt > a.txt && sort refs.txt > b.txt && comm -23 a.txt b.txt | wc -l"
        gc = [SHELFLIFE, "gc", "--dry-run", "--no-scan"]
        for _ in range(repeat):
            note("scan", measure([SHELFLIFE, "scan"], cwd=work))
            found = note("gc --dry-run", measure(gc, cwd=work))
            _check(found, expected)
            general = measure([SHELFLIFE, "--config", str(snapshot), *gc[1:]], cwd=work)
            _check(note("gc, snapshot path", general), expected)
            note("export lists", measure(export, cwd=work, shell=True))
            counted = note("sort | comm", measure(comm, cwd=work, shell=True))
            assert int(counted.output.strip()) == expected
            naive = [sys.executable, "-c", NAIVE, str(work / "tier"), table, PG]
            assert int(note("naive set", measure(naive, cwd=work)).output.strip()) == expected
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
        import psycopg

        with psycopg.connect(PG, autocommit=True) as conn:
            if table:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            if database:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _check(result: Measure, expected: int) -> None:
    planned = re.search(r"delete-orphan\s*│\s*\S+\s*│\s*(\d+)", result.output)
    assert planned is not None, result.output
    assert int(planned.group(1)) == expected, result.output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--catalog",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="where shelflife keeps its catalog (default: SQLite)",
    )
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    every = {n: run_size(n, options.catalog, options.repeat) for n in sizes}
    print(f"\ncatalog: {options.catalog}; median of {options.repeat} (min–max)")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'objects':>9} {'step':<18} {'wall':>22} {'CPU':>7} {'peak RSS':>9}")
    for n, results in every.items():
        for name, runs in results.items():
            walls = [m.wall for m in runs]
            print(
                f"{n:>9,} {name:<18} {median(walls):7.2f} s ({min(walls):.2f}–{max(walls):.2f})"
                f" {median([m.cpu for m in runs]):6.2f}s {max(m.rss_mib for m in runs):6.0f} MiB"
            )
        wall = {name: median([m.wall for m in runs]) for name, runs in results.items()}
        pipeline = wall["export lists"] + wall["sort | comm"]
        print(
            f"{'':>9} gc / pipeline: {wall['gc --dry-run'] / pipeline:.2f}x "
            f"(snapshot path {wall['gc, snapshot path'] / pipeline:.2f}x); "
            f"(scan + gc) / pipeline: {(wall['scan'] + wall['gc --dry-run']) / pipeline:.2f}x; "
            f"gc / (sort | comm): {wall['gc --dry-run'] / wall['sort | comm']:.2f}x"
        )
    if len(sizes) >= 2:
        for name in ("gc --dry-run", "scan"):
            first = max(m.rss_mib for m in every[sizes[0]][name])
            last = max(m.rss_mib for m in every[sizes[-1]][name])
            print(
                f"peak RSS of {name} grows {last / first:.2f}x from {sizes[0]:,} to {sizes[-1]:,}"
            )


if __name__ == "__main__":
    main()
