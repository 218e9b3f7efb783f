"""Scale-out: one migration run fanned out to 1 and to 2 Celery worker processes.

    .venv/bin/python bench/scale.py [--count 4000] [--size 65536]

For each worker count: ``--count`` files of ``--size`` bytes on a ``file://`` tier, one row
per file in a SQLite application database, the catalog in PostgreSQL, a fresh bucket on one
moto S3 server; ``[executor] backend = "celery"`` with Redis as broker and batches of 100.
``shelflife run`` (scan, plan, fan-out, wait) is timed; so is the CPU that moto, the
workers and the coordinator used, which says what the bottleneck was: a process whose CPU
time is close to the wall time was saturated.

Printed: wall per worker count and the speed-up of 2 workers over 1 (target ≥ 1.6× where
the store is not the bottleneck).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import make_s3_bucket  # noqa: E402

from bench.transfer import start_moto  # noqa: E402

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")
CELERY = str(Path(sys.executable).parent / "celery")
PG = os.environ.get("SHELFLIFE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def cpu(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def run(workers: int, count: int, size: int, endpoint: str, moto: psutil.Process) -> float:
    with tempfile.TemporaryDirectory(prefix="shelflife-bench-scale-") as tmp:
        base = Path(tmp)
        database = f"shelflife_scale_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        catalog = PG.rsplit("/", 1)[0] + "/" + database
        bucket = make_s3_bucket(endpoint)
        (base / "local").mkdir()
        old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
        app = sqlite3.connect(base / "app.db")
        app.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
        app.execute("CREATE INDEX ix_jobs_path ON jobs (path)")
        for i in range(count):
            path = base / "local" / f"f{i:05d}.bin"
            path.write_bytes(os.urandom(size))
            os.utime(path, (old, old))
            app.execute("INSERT INTO jobs (path) VALUES (?)", (f"local/f{i:05d}.bin",))
        app.commit()
        app.close()
        queue = f"scale-{uuid.uuid4().hex[:6]}"
        (base / "shelflife.toml").write_text(f"""
[catalog]
url = "{catalog}"
[databases.app]
url = "sqlite:///{base / "app.db"}"
[tiers.local]
url = "file://local"
create = true
ref_format = "local/{{key}}"
[tiers.cloud]
url = "s3://{bucket}/cold"
endpoint = "{endpoint}"
region = "us-east-1"
access_key = "testing"
secret_key = "testing"
ref_format = "s3://{bucket}/cold/{{key}}"
[[references]]
database = "app"
table = "jobs"
column = "path"
[[rules]]
id = "cold"
tier = "local"
action = "migrate"
to = "cloud"
after = "1d"
[executor]
backend = "celery"
batch_size = 100
concurrency = 8
[celery]
broker_url = "redis://127.0.0.1:6379/11"
batch_queue = "{queue}"
wave = 1000
""")
        subprocess.run(["redis-cli", "-n", "11", "flushdb"], check=True, capture_output=True)
        env = {**os.environ, "SHELFLIFE_CONFIG": str(base / "shelflife.toml")}
        procs = []
        for number in range(workers):
            procs.append(
                subprocess.Popen(
                    [CELERY, "-A", "shelflife.celery", "worker", "-Q", queue, "-c", "1",
                     "-n", f"s{number}-{queue}@%h", "--loglevel", "warning",
                     "--without-heartbeat", "--without-gossip", "--without-mingle"],
                    cwd=base,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )  # fmt: skip
        time.sleep(6)  # workers ready
        handles = [psutil.Process(p.pid) for p in procs]
        before_workers = sum(cpu(h) for h in handles)
        before_moto = cpu(moto)
        start = time.perf_counter()
        with (base / "run.json").open("wb") as sink:  # a pipe would fill up and block
            process = subprocess.Popen([SHELFLIFE, "run", "--json"], cwd=base, env=env, stdout=sink)
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out = (base / "run.json").read_text()
        worker_cpu = sum(cpu(h) for h in handles) - before_workers
        moto_cpu = cpu(moto) - before_moto
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        if os.waitstatus_to_exitcode(status) != 0 or '"status": "ok"' not in out:
            raise RuntimeError(f"run failed: {out[-2000:]}")
        moved = out.count('"action": "migrate"')
        print(
            f"  {workers} worker(s): {wall:6.1f} s for {moved} objects "
            f"({moved * size / wall / 1e6:5.1f} MB/s); CPU: moto {moto_cpu:5.1f} s "
            f"({moto_cpu / wall:.0%} of a core), workers {worker_cpu:5.1f} s, coordinator "
            f"{usage.ru_utime + usage.ru_stime:5.1f} s",
            flush=True,
        )
        return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    args = parser.parse_args()
    print(
        f"shelflife scale-out benchmark — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.count} x {args.size} bytes, file → moto S3"
    )
    moto_process, endpoint = start_moto()
    try:
        moto = psutil.Process(moto_process.pid)
        one = run(1, args.count, args.size, endpoint, moto)
        two = run(2, args.count, args.size, endpoint, moto)
        print(f"  speed-up with 2 workers: {one / two:.2f}x")
    finally:
        moto_process.terminate()
        moto_process.wait(20)


if __name__ == "__main__":
    main()
