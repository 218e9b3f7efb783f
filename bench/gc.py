"""Orphan planning at scale: ``shelflife gc --dry-run`` beside ``sort | comm`` and a naive set.

    .venv/bin/python bench/gc.py [--sizes 100000,1000000]

For each size N: N empty files on a ``file://`` tier (in 1,000 folders), and a PostgreSQL
table whose rows reference every second one. Measured, each as a separate process, with
wall time and peak RSS (from ``wait4``):

- ``shelflife scan`` (inventory and reference snapshot) — reported, not compared;
- ``shelflife gc --dry-run --no-scan`` (the scan is measured above): reads the references
  into the catalog and plans the orphans with the planner over the catalog's anti-join,
  the plan's items written to the catalog as they are planned;
- ``sort | comm``: ``LC_ALL=C sort`` of both key lists and ``comm -23``, the lists already
  exported; and the full pipeline that also exports them (``find`` + ``psql COPY``);
- a naive approach: every reference in a Python set, then a walk of the folder.

Targets: the peak RSS of gc grows at most 1.5x from 10^5 to 10^6 objects; its wall time is
at most 2x the sort | comm pipeline.
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
            env={**os.environ, "LC_ALL": "C"},
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        errors.seek(0)
        stdout, stderr = out.read().decode(), errors.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed: {stderr[-2000:]}")
    return Measure(wall, usage.ru_maxrss / 1024, stdout)


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


def run_size(n: int, catalog: str) -> dict[str, Measure]:
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
    try:
        table = build(work, n, catalog)
        results = {"scan": measure([SHELFLIFE, "scan"], cwd=work)}
        results["gc --dry-run"] = measure([SHELFLIFE, "gc", "--dry-run", "--no-scan"], cwd=work)
        export = (
            f"find tier -type f -printf '%P\\n' > objects.txt && "
            f"psql '{PG}' -qAtc \"COPY (SELECT substr(path, 7) FROM {table}) TO STDOUT\" "
            "> refs.txt"
        )
        results["export lists"] = measure(export, cwd=work, shell=True)
        comm = "sort objects.txt > a.txt && sort refs.txt > b.txt && comm -23 a.txt b.txt | wc -l"
        results["sort | comm"] = measure(comm, cwd=work, shell=True)
        results["naive set"] = measure(
            [sys.executable, "-c", NAIVE, str(work / "tier"), table, PG], cwd=work
        )
        expected = n - (n + 1) // 2
        assert int(results["sort | comm"].output.strip()) == expected
        assert int(results["naive set"].output.strip()) == expected
        planned = re.search(r"delete-orphan\s*│\s*\S+\s*│\s*(\d+)", results["gc --dry-run"].output)
        assert planned is not None, results["gc --dry-run"].output
        assert int(planned.group(1)) == expected, results["gc --dry-run"].output
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)
        import psycopg

        with psycopg.connect(PG, autocommit=True) as conn:
            if table:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            if database:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--catalog",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="where shelflife keeps its catalog (default: SQLite)",
    )
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    all_results = {n: run_size(n, options.catalog) for n in sizes}
    print(f"\ncatalog: {options.catalog}")
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'objects':>9} {'step':<14} {'wall':>8} {'peak RSS':>10}")
    for n, results in all_results.items():
        for name, m in results.items():
            print(f"{n:>9,} {name:<14} {m.wall:>7.2f}s {m.rss_mib:>8.0f} MiB")
        gc, comm, export = results["gc --dry-run"], results["sort | comm"], results["export lists"]
        print(
            f"{'':>9} gc / (sort | comm): {gc.wall / comm.wall:.2f}x;  "
            f"gc / (export + sort | comm): {gc.wall / (comm.wall + export.wall):.2f}x"
        )
    if len(sizes) >= 2:
        first, last = all_results[sizes[0]]["gc --dry-run"], all_results[sizes[-1]]["gc --dry-run"]
        print(
            f"peak RSS of gc --dry-run grows {last.rss_mib / first.rss_mib:.2f}x from "
            f"{sizes[0]:,} to {sizes[-1]:,} objects"
        )


if __name__ == "__main__":
    main()
