"""Migration benchmark: ``shelflife enforce`` beside ``rclone move``, same files, same server.

    .venv/bin/python bench/migrate.py [--small]

2,000 x 64 KiB and 8 x 32 MiB files move from a ``file://`` tier to one moto S3 server.
shelflife copies, verifies each object at the destination (size and SHA-256 read back),
rewrites the rows pointing at it in PostgreSQL and deletes the source, 16 transfers at a
time; ``rclone move --transfers 16 --s3-no-check-bucket`` moves a copy of the same files
(rclone checks size and MD5/ETag, touches no database). Wall time and CPU come from
``wait4`` on each child; moto's CPU is in neither. Then the rewrite of 10^5 rows alone:
the statement shelflife issues per batch, timed directly against PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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

    base = work / label.replace(" ", "-")
    keys = make_files(base / "local", count, size, "f")
    shutil.copytree(base / "local", base / "for-rclone")
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
    wall, cpu = timed([SHELFLIFE, "enforce"], env, base)
    with psycopg.connect(PG, autocommit=True) as conn:
        moved = conn.execute(f"SELECT count(*) FROM {table} WHERE path LIKE 's3://%'").fetchone()
        conn.execute(f"DROP TABLE {table}")
    assert moved is not None
    assert moved[0] == count, moved
    assert not any((base / "local").rglob("*.bin"))
    env = rclone_env(endpoint)
    rwall, rcpu = timed(
        [
            "rclone",
            "move",
            str(base / "for-rclone"),
            f"moto:{theirs}/out",
            "--transfers",
            "16",
            "--s3-no-check-bucket",
        ],
        env,
        base,
    )
    return {
        "wall": wall,
        "cpu": cpu,
        "rclone_wall": rwall,
        "rclone_cpu": rcpu,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tenth of the sizes")
    small = parser.parse_args().small
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="shelflife-migrate-"))
    try:
        cases = {
            "2,000 x 64 KiB": case(endpoint, work, 200 if small else 2000, 64 * 1024, "small"),
            "8 x 32 MiB": case(endpoint, work, 1 if small else 8, 32 * 1024 * 1024, "large"),
        }
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    rows = 10_000 if small else 100_000
    rewrite = {batch: rewrite_rows(rows, batch) for batch in (64, 1000, 5000, 0)}
    print(
        f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{'case':<16} {'shelflife wall':>14} {'CPU':>7} {'MB/s':>6} {'rclone wall':>12} "
        f"{'CPU':>7} {'MB/s':>6} {'throughput ratio':>17}"
    )
    for name, r in cases.items():
        mb = r["bytes"] / 1e6
        print(
            f"{name:<16} {r['wall']:>13.2f}s {r['cpu']:>6.2f}s {mb / r['wall']:>6.1f} "
            f"{r['rclone_wall']:>11.2f}s {r['rclone_cpu']:>6.2f}s {mb / r['rclone_wall']:>6.1f} "
            f"{r['rclone_wall'] / r['wall']:>16.2f}x"
        )
    print("throughput ratio = shelflife / rclone (above 1: shelflife moves faster)")
    for batch, elapsed in rewrite.items():
        how = f"{batch} per statement" if batch else "one UPDATE … replace() (the floor)"
        print(f"rewrite of {rows:,} rows in PostgreSQL, {how}: {elapsed:.2f}s")


if __name__ == "__main__":
    main()
