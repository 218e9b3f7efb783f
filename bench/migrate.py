"""Migration benchmark: ``shelflife enforce`` beside ``rclone move``, same files, same server.

    .venv/bin/python bench/migrate.py [--small] [--repeat 3]

2,000 x 64 KiB and 8 x 32 MiB files (200 and 1 with ``--small``) move from a ``file://``
tier to one moto S3 server. shelflife copies (16 transfers at a time, each object in one
request within ``[executor] transfer_memory``), verifies each copy by what the store says
of the bytes it received (the upload's ETag against the MD5 of the bytes sent; the tier's
default ``verify = "checksum"``), rewrites the rows pointing at it in PostgreSQL and deletes
the source; ``rclone move --transfers 16 --s3-no-check-bucket`` moves a copy of the same
files (it checks size and MD5/ETag and HEADs each upload, touches no database), and, for
information, ``--s3-no-head`` as well (no HEAD). Wall time and CPU come from ``wait4`` on
each child; moto's CPU is in neither.

Each run also times ``shelflife --help`` (interpreter start-up and imports) and a
second ``shelflife enforce`` with nothing left to move (start-up, recovery, scans, plan,
the record of the run: what every run costs), so the CPU splits into start-up, the fixed
cost of a run, and the work of moving. Then the rewrite of 10^5 rows alone: the statement
shelflife issues per batch, timed directly against PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import make_s3_bucket  # noqa: E402

from bench.gc import PG  # noqa: E402
from bench.transfer import rclone_env, start_moto  # noqa: E402

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return wall, usage.ru_utime + usage.ru_stime


def make_files(folder: Path, count: int, size: int, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    keys = []
    for i in range(count):
        path = folder / f"{prefix}{i:05d}.bin"
        path.write_bytes(os.urandom(size))
        os.utime(path, (old, old))
        keys.append(path.name)
    return keys


def case(endpoint: str, work: Path, count: int, size: int, label: str) -> dict[str, float]:
    import psycopg

    base = work / f"{label}-{uuid.uuid4().hex[:6]}"
    keys = make_files(base / "local", count, size, "f")
    shutil.copytree(base / "local", base / "for-rclone")
    shutil.copytree(base / "local", base / "for-rclone-no-head")
    table = f"bench_rows_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, path text)")
        conn.execute(f"CREATE INDEX ON {table} (path)")
        with conn.cursor().copy(f"COPY {table} (path) FROM STDIN") as copy:
            for key in keys:
                copy.write_row((f"local/{key}",))
    ours, theirs = make_s3_bucket(endpoint), make_s3_bucket(endpoint)
    (base / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[executor]
concurrency = 16
batch_size = 500
[databases.app]
url = "{PG.replace("postgresql://", "postgresql+psycopg://")}"
[tiers.local]
url = "file://local"
create = true
ref_format = "local/{{key}}"
[tiers.cloud]
url = "s3://{ours}/out"
endpoint = "{endpoint}"
access_key = "testing"
secret_key = "testing"
ref_format = "s3://{ours}/out/{{key}}"
[[references]]
database = "app"
table = "{table}"
column = "path"
[[rules]]
id = "age-out"
tier = "local"
action = "migrate"
to = "cloud"
after = "1d"
""")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    subprocess.run([SHELFLIFE, "scan"], cwd=base, env=env, check=True, capture_output=True)
    _, startup = timed([SHELFLIFE, "--help"], env, base)
    wall, cpu = timed([SHELFLIFE, "enforce"], env, base)
    idle_wall, idle = timed([SHELFLIFE, "enforce"], env, base)  # nothing left to move
    with psycopg.connect(PG, autocommit=True) as conn:
        moved = conn.execute(f"SELECT count(*) FROM {table} WHERE path LIKE 's3://%'").fetchone()
        conn.execute(f"DROP TABLE {table}")
    assert moved is not None
    assert moved[0] == count, moved
    assert not any((base / "local").rglob("*.bin"))
    env = rclone_env(endpoint)
    rclone = ["rclone", "move", "--transfers", "16", "--s3-no-check-bucket"]
    rwall, rcpu = timed([*rclone, str(base / "for-rclone"), f"moto:{theirs}/out"], env, base)
    nwall, ncpu = timed(
        [*rclone, "--s3-no-head", str(base / "for-rclone-no-head"), f"moto:{theirs}/no-head"],
        env,
        base,
    )
    shutil.rmtree(base, ignore_errors=True)
    return {
        "wall": wall,
        "cpu": cpu,
        "startup_cpu": startup,
        "idle_cpu": idle,
        "idle_wall": idle_wall,
        "rclone_wall": rwall,
        "rclone_cpu": rcpu,
        "nohead_wall": nwall,
        "nohead_cpu": ncpu,
        "bytes": count * size,
    }


def rewrite_rows(n: int, batch: int) -> float:
    """Time the per-batch UPDATE statements shelflife issues to repoint n rows (batch 0:
    PostgreSQL's floor, one UPDATE … replace() over every row, no lookups at all)."""
    return _rewrite(n, batch)


def _rewrite(n: int, batch: int) -> float:
    import psycopg
    from sqlalchemy import create_engine

    from shelflife.config.model import ReferenceConfig
    from shelflife.engine.migrate import repoint
    from shelflife.references.sources import ReferenceSource

    name = f"bench_rewrite_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, path text)")
        with conn.cursor().copy(f"COPY {name} (path) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((f"local/k{i:07d}.bin",))
        conn.execute(f"CREATE INDEX ON {name} (path)")
        conn.execute(f"ANALYZE {name}")
    engine = create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    source = ReferenceSource(ReferenceConfig(database="app", table=name, column="path"), engine)
    start = time.perf_counter()
    if batch == 0:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {name} SET path = replace(path, 'local/', 's3://b/out/')")
    for first in range(0, n if batch else 0, batch or 1):
        mapping = {
            f"local/k{i:07d}.bin": f"s3://b/out/k{i:07d}.bin"
            for i in range(first, min(n, first + batch))
        }
        with engine.begin() as conn:
            repoint(conn, source, mapping)
    elapsed = time.perf_counter() - start
    with engine.begin() as conn:
        left = conn.exec_driver_sql(f"SELECT count(*) FROM {name} WHERE path LIKE 'local/%%'")
        assert left.scalar() == 0
        conn.exec_driver_sql(f"DROP TABLE {name}")
    engine.dispose()
    return elapsed


def spread(values: list[float]) -> str:
    """Median, and the range of the runs."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median printed)")
    parser.add_argument("--no-rewrite", action="store_true", help="skip the row-rewrite timing")
    options = parser.parse_args()
    if not shutil.which("rclone"):
        sys.exit("rclone is not installed: apt-get install rclone")
    small = options.small
    sizes = {
        "small": (200 if small else 2000, 64 * 1024),
        "large": (1 if small else 8, 32 * 1024 * 1024),
    }
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="shelflife-migrate-"))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sizes}
    try:
        for _ in range(options.repeat):  # the cases alternate, so load drifts hit both
            for name, (count, size) in sizes.items():
                runs[name].append(case(endpoint, work, count, size, name))
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"median (range) of {options.repeat} runs"
    )
    for name, (count, size) in sizes.items():
        figures = runs[name]
        mb = figures[0]["bytes"] / 1e6
        label = f"{count:,} x {size // 1024} KiB" if size < 1024**2 else f"{count} x 32 MiB"
        ratios = [r["rclone_wall"] / r["wall"] for r in figures]
        cpu_ratios = [r["cpu"] / r["rclone_cpu"] for r in figures]
        nohead = [r["nohead_wall"] / r["wall"] for r in figures]
        work_cpu = [r["cpu"] - r["idle_cpu"] for r in figures]
        print(f"\n{label} ({mb:.0f} MB)")
        print(f"  shelflife enforce      wall {spread([r['wall'] for r in figures])} s")
        print(f"                         CPU  {spread([r['cpu'] for r in figures])} s")
        print(f"    start-up (--help)    CPU  {spread([r['startup_cpu'] for r in figures])} s")
        print(f"    a run, nothing to do CPU  {spread([r['idle_cpu'] for r in figures])} s")
        print(f"                         wall {spread([r['idle_wall'] for r in figures])} s")
        print(f"    the moves themselves CPU  {spread(work_cpu)} s")
        print(f"  rclone move            wall {spread([r['rclone_wall'] for r in figures])} s")
        print(f"                         CPU  {spread([r['rclone_cpu'] for r in figures])} s")
        print(f"  rclone --s3-no-head    wall {spread([r['nohead_wall'] for r in figures])} s")
        print(f"                         CPU  {spread([r['nohead_cpu'] for r in figures])} s")
        print(f"  throughput ratio (rclone wall / shelflife wall): {spread(ratios)}x")
        print(f"    against rclone --s3-no-head:                  {spread(nohead)}x")
        print(f"  CPU ratio (shelflife / rclone):                  {spread(cpu_ratios)}x")
    print("\nthroughput ratio above 1: shelflife moves faster; CPU ratio below 1: it uses less")
    if options.no_rewrite:
        return
    rows = 10_000 if small else 100_000
    rewrite = {batch: rewrite_rows(rows, batch) for batch in (64, 1000, 5000, 0)}
    for batch, elapsed in rewrite.items():
        how = f"{batch} per statement" if batch else "one UPDATE … replace() (the floor)"
        print(f"rewrite of {rows:,} rows in PostgreSQL, {how}: {elapsed:.2f}s")


if __name__ == "__main__":
    main()
