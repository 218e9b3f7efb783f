"""Planning at scale: peak RSS of the CLI's dry run over a catalog of N objects, beside a
plain streaming SELECT of the same rows.

    .venv/bin/python bench/plan.py [--sizes 100000,1000000] [--catalog sqlite|postgresql]

For each size N, in a fresh work directory:

- a SQLite catalog (or a fresh PostgreSQL database with ``--catalog postgresql``, on
  ``$SHELFLIFE_BENCH_PG``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``)
  whose ``objects`` table is seeded directly with N rows on the ``local`` tier (a
  ``file://`` folder), half of them modified 100 days ago, half 10 days ago;
- an application SQLite database whose ``jobs.path`` column (declared under
  ``[[references]]``) names every second object: the other half are orphans;
- three rules on ``local``, in this order: collect orphans (grace 1 day,
  ``max_fraction = 1.0``), expire after 90 days, and migrate to ``cold`` (a second folder)
  over the watermark: the tier's capacity is set so that it is 3.5x full, and still
  87.5% full (over its 80% mark) once the other two rules have freed their objects.

Expected plan: N/2 orphans deleted, N/4 objects expired, some migrated; no refusal. The
seeding uses only ``shelflife.catalog.Catalog.open`` (to create the schema) and the table
definitions of ``shelflife.catalog.schema``; everything measured goes through the CLI.

Measured, each in a child process of its own:

- the plan: ``shelflife -c shelflife.toml run --dry-run --no-scan --json``, stdout to a file.
  Until ``run`` has ``--no-scan`` (looked for in ``shelflife run --help``), this is
  ``shelflife -c shelflife.toml plan --json`` (``plan`` does not scan); the output says
  which. The exit code must be 0, and the JSON must hold no refusal and the expected
  totals, or the bench stops with the command's stderr: an error is never measured;
- the floor: a Python process that streams ``SELECT key, size, modified_at FROM objects``
  through SQLAlchemy (10,000 rows at a time) and counts the rows: what any plan has to
  read at least once.

Printed per size: seconds and peak RSS (MiB) of each, and the ratios plan/floor; at the
end the growth of the plan's peak RSS from the smallest to the largest size, beside its
target (at most 1.5x).

Peak RSS is ``ru_maxrss`` from ``os.wait4`` on the measured process (KiB on Linux), not
``getrusage(RUSAGE_CHILDREN)``, which is the maximum over every child waited for so far.
Linux also carries the high-water RSS of the address space a process replaces when it
calls exec into its ``ru_maxrss``, so a direct child of this (large) process would report
at least this process's peak. Each command is therefore started by a small launcher
(``python -I -S``, about 10 MiB) that spawns it and reports its ``wait4`` figures and its
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
SHELFLIFE = str(Path(sys.executable).parent / "shelflife")
PG = os.environ.get("SHELFLIFE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BATCH = 50_000
TARGET_GROWTH = 1.5

# Spawns argv[2:], waits for it, writes {"rc", "maxrss_kib", "seconds"} to argv[1].
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write('{"rc": %d, "maxrss_kib": %d, "seconds": %r}' % (
        os.waitstatus_to_exitcode(status), usage.ru_maxrss, seconds))
"""

FLOOR = """
import sys
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1])
count = 0
with engine.connect() as conn:
    result = conn.execution_options(stream_results=True).execute(
        text("SELECT key, size, modified_at FROM objects")
    )
    for rows in result.partitions(10_000):  # no size: one partition on psycopg
        count += len(rows)
print(count)
"""


@dataclass
class Measure:
    seconds: float
    rss_mib: float
    stdout: Path


def measure(name: str, command: list[str], *, cwd: Path) -> Measure:
    """Run ``command`` under the launcher; stop the bench unless it exits 0."""
    stdout, stderr, figures = (cwd / f"{name}.{suffix}" for suffix in ("out", "err", "rusage"))
    with stdout.open("wb") as out, stderr.open("wb") as err:
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(figures), *command]
        launched = subprocess.run(
            launcher, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    if launched.returncode != 0 or not figures.exists():
        fail(f"could not start {' '.join(command)}", stderr)
    result = json.loads(figures.read_text())
    if result["rc"] != 0:
        fail(f"{' '.join(command)} exited {result['rc']}", stderr, stdout)
    return Measure(result["seconds"], result["maxrss_kib"] / 1024, stdout)


def fail(message: str, stderr: Path, stdout: Path | None = None) -> NoReturn:
    """Stop the bench with the command's stderr (or the start of its output, if silent)."""
    label, text = "stderr", stderr.read_text(errors="replace").strip()
    if not text and stdout is not None:
        label, text = "stdout", stdout.read_text(errors="replace")[:4000].strip()
    text = text[-4000:] or "(empty)"
    sys.exit(f"bench/plan.py: {message}; not measured\n--- {label} ---\n{text}")


def plan_arguments() -> tuple[list[str], str]:
    """The dry run to measure: ``run --dry-run --no-scan`` where it exists, else ``plan``."""
    help_text = subprocess.run(
        [SHELFLIFE, "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    ).stdout
    if "--no-scan" in help_text:
        return ["run", "--dry-run", "--no-scan", "--json"], "run --dry-run --no-scan --json"
    return ["plan", "--json"], (
        "plan --json (this 'shelflife run' has no --no-scan yet; 'plan' does not scan)"
    )


def top_level(path: Path) -> dict[str, Any]:
    """The top-level fields of the plan JSON except its action and skip lists.

    Read where they are (before or after ``actions``, as ``indent=2`` prints them) rather
    than by decoding the whole document, which at 10^6 actions is several hundred MB.
    """
    text = path.read_text()
    decoder = json.JSONDecoder()
    fields: dict[str, Any] = {}
    for found in re.finditer(r'^  "(\w+)": ', text, re.MULTILINE):
        if found.group(1) not in ("actions", "skipped"):
            fields[found.group(1)], _ = decoder.raw_decode(text, found.end())
    if not fields:  # not printed with indent=2: decode it all
        body = json.loads(text)
        fields = {k: v for k, v in body.items() if k not in ("actions", "skipped")}
    return fields


def check_plan(measured: Measure, n: int, stderr: Path) -> dict[str, dict[str, int]]:
    """Stop the bench unless the plan is the one this setup calls for."""
    try:
        fields = top_level(measured.stdout)
    except ValueError as exc:
        fail(f"the plan's output is not JSON ({exc})", stderr, measured.stdout)
    if fields.get("refusals") or fields.get("status") in ("refused", "failed"):
        fail(
            f"the plan was refused: {fields.get('refusals') or fields.get('reason')}",
            stderr,
        )
    totals: dict[str, dict[str, int]] = fields.get("totals") or {}
    counts = {action: figures["objects"] for action, figures in totals.items()}
    orphans = n - (n + 1) // 2
    expired = (n + 3) // 4
    if (
        counts.get("delete-orphan") != orphans
        or counts.get("expire") != expired
        or not counts.get("migrate")
    ):
        fail(
            f"unexpected plan totals {counts} (expected delete-orphan {orphans}, "
            f"expire {expired}, migrate > 0)",
            stderr,
        )
    return totals


def catalog_url(kind: str, work: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{work / 'catalog.db'}", None
    from sqlalchemy import create_engine, text

    name = f"shelflife_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG.rsplit("/", 1)[0] + "/" + name, name


def drop_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def key(i: int) -> str:
    return f"renders/{i % 1000:03d}/job-{i:08d}.mp4"


def size(i: int) -> int:
    return 1000 + i * 7919 % 5000


def seed(url: str, work: Path, n: int) -> int:
    """The catalog's schema and N objects; the application's rows naming the even ones.

    Returns the bytes the watermark rule finds on the tier: those of the objects neither
    collected (odd) nor expired (old: ``i % 4 == 0``).
    """
    from shelflife.catalog import Catalog
    from shelflife.catalog.schema import bulk_execute, objects, scans, to_micros

    now = datetime.now(UTC)
    old = to_micros(now - timedelta(days=100))
    young = to_micros(now - timedelta(days=10))
    catalog = Catalog.open(url)
    with catalog.engine.begin() as conn:
        for start in range(0, n, BATCH):
            bulk_execute(
                conn,
                objects.insert(),
                [
                    {
                        "tier": "local",
                        "key": key(i),
                        "size": size(i),
                        "checksum": None,
                        "etag": f"e{i}",
                        "modified_at": old if i % 4 < 2 else young,
                        "first_seen_at": young,
                        "last_seen_at": young,
                        "state": "present",
                    }
                    for i in range(start, min(n, start + BATCH))
                ],
            )
        # as a scan would leave them: --no-scan plans only on tiers scanned before
        for tier in ("local", "cold"):
            conn.execute(
                scans.insert().values(
                    tier=tier, started_at=now, finished_at=now, status="ok", objects=0, bytes=0
                )
            )
    with catalog.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    catalog.engine.dispose()

    app = sqlite3.connect(work / "app.db")
    app.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
    app.executemany(
        "INSERT INTO jobs (path) VALUES (?)",
        ((f"data/storage/outputs/{key(i)}",) for i in range(0, n, 2)),
    )
    app.execute("CREATE INDEX ix_jobs_path ON jobs (path)")
    app.commit()
    app.close()
    return sum(size(i) for i in range(2, n, 4))


def write_config(work: Path, url: str, n: int, capacity: int) -> Path:
    (work / "local").mkdir()
    (work / "cold").mkdir()
    config = work / "shelflife.toml"
    config.write_text(f"""\
[catalog]
url = "{url}"

[databases.app]
url = "sqlite:///app.db"

[tiers.local]
url = "file://local"
create = true
ref_format = "data/storage/outputs/{{key}}"
capacity = "{capacity}B"
high_watermark = "80%"
low_watermark = "70%"

[tiers.cold]
url = "file://cold"
create = true
ref_format = "data/storage/cold/{{key}}"

[[references]]
database = "app"
table = "jobs"
column = "path"
on_expire = "null"

[[rules]]
id = "orphans"
tier = "local"
action = "collect-orphans"
grace = "1d"
max_fraction = 1.0

[[rules]]
id = "retention"
tier = "local"
action = "expire"
after = "90d"

[[rules]]
id = "watermark"
tier = "local"
action = "migrate"
to = "cold"
when = "over-watermark"

[executor]
max_delete = {2 * n}
max_delete_bytes = "1000TB"
""")
    return config


def run_size(n: int, kind: str, arguments: list[str]) -> dict[str, Measure]:
    work = Path(tempfile.mkdtemp(prefix=f"shelflife-bench-plan-{n}-"))
    database = None
    try:
        url, database = catalog_url(kind, work)
        start = time.perf_counter()
        kept = seed(url, work, n)
        # 87.5% after the deletions, over the 80% mark: the watermark rule moves ~1/8 of it
        config = write_config(work, url, n, kept * 8 // 7)
        seeded = time.perf_counter() - start
        floor = measure("floor", [sys.executable, "-c", FLOOR, url], cwd=work)
        if floor.stdout.read_text().strip() != str(n):
            fail(f"the floor read {floor.stdout.read_text().strip()} rows", work / "floor.err")
        plan = measure("plan", [SHELFLIFE, "-c", str(config), *arguments], cwd=work)
        totals = check_plan(plan, n, work / "plan.err")
        output_mib = plan.stdout.stat().st_size / 2**20
        done = ", ".join(f"{action} {t['objects']:,}" for action, t in totals.items())
        print(
            f"  {n:>9,} objects (seeded in {seeded:.1f} s): "
            f"plan {plan.seconds:.2f} s, {plan.rss_mib:.0f} MiB;  "
            f"floor {floor.seconds:.2f} s, {floor.rss_mib:.0f} MiB;  "
            f"plan/floor {plan.seconds / floor.seconds:.1f}x time, "
            f"{plan.rss_mib / floor.rss_mib:.1f}x RSS;  "
            f"{done}; {output_mib:.0f} MiB of JSON",
            flush=True,
        )
        return {"plan": plan, "floor": floor}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if database:
            drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="catalog sizes, comma-separated")
    parser.add_argument(
        "--catalog",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="where shelflife keeps its catalog (default: SQLite)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not Path(SHELFLIFE).exists():
        sys.exit(f"{SHELFLIFE} not found: install the project in this venv (pip install -e .)")
    sys.path.insert(0, str(ROOT / "src"))
    arguments, label = plan_arguments()
    print(
        f"shelflife plan benchmark — {platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}, catalog {args.catalog}",
        flush=True,
    )
    print(f"measured: shelflife -c shelflife.toml {label}")
    print(
        "peak RSS: ru_maxrss from os.wait4 on each child, started by a small launcher",
        flush=True,
    )
    results = {n: run_size(n, args.catalog, arguments) for n in sizes}
    print(f"\n{'objects':>10} {'plan':>8} {'peak RSS':>10} {'floor':>8} {'peak RSS':>10}")
    for n, figures in results.items():
        plan, floor = figures["plan"], figures["floor"]
        print(
            f"{n:>10,} {plan.seconds:>7.2f}s {plan.rss_mib:>6.0f} MiB "
            f"{floor.seconds:>7.2f}s {floor.rss_mib:>6.0f} MiB"
        )
    if len(sizes) >= 2:
        small, large = results[min(sizes)], results[max(sizes)]
        growth = large["plan"].rss_mib / small["plan"].rss_mib
        floor_growth = large["floor"].rss_mib / small["floor"].rss_mib
        verdict = "met" if growth <= TARGET_GROWTH else "NOT met"
        print(
            f"peak RSS growth of the plan from {min(sizes):,} to {max(sizes):,} objects: "
            f"{growth:.2f}x (target <= {TARGET_GROWTH}x: {verdict}); floor {floor_growth:.2f}x"
        )


if __name__ == "__main__":
    main()
