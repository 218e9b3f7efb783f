"""Planning at scale: ``shelflife plan`` over a catalog of N objects, beside the queries it
cannot beat.

    .venv/bin/python bench/plan.py [--sizes 100000,1000000] [--catalog sqlite|postgresql]

For each size N, a catalog holds N objects on one tier (half older than 90 days) and
a reference snapshot naming every second one. Three rules are planned: collect orphans,
expire after 90 days, keep the tier under its watermark. Measured in this process:

- the plan (the pure planner over the catalog's inventory view: each object streamed with
  its pins, leases and the sources naming it);
- reference 1: ``SELECT`` of every object's key, size and time, streamed (the floor: the
  planner has to read each object once per rule);
- reference 2: the orphan anti-join ``gc`` marks with (``INSERT … SELECT``), for the
  orphan rule alone.

Printed: seconds, objects per second, and the ratios against the references; peak RSS of
the process after each step.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import create_engine, select, text  # noqa: E402

from shelflife import Shelf  # noqa: E402
from shelflife.base.units import utcnow  # noqa: E402
from shelflife.catalog.schema import bulk_execute, objects, refs, to_micros  # noqa: E402
from shelflife.config import parse_config  # noqa: E402
from shelflife.service.runs import choose_rules  # noqa: E402

PG = os.environ.get("SHELFLIFE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def catalog_url(kind: str, work: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{work / 'catalog.db'}", None
    name = f"shelflife_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG.rsplit("/", 1)[0] + "/" + name, name


def fill(shelf: Shelf, n: int) -> None:
    """N objects, half of them 100 days old; a snapshot naming every second one."""
    now = utcnow()
    old, young = to_micros(now - timedelta(days=100)), to_micros(now - timedelta(days=10))
    batch = 50_000
    snapshot = shelf.ledger.begin_snapshot(now)
    with shelf.catalog.engine.begin() as conn:
        for start in range(0, n, batch):
            rows = [
                {
                    "tier": "local",
                    "key": f"renders/{i % 1000:03d}/job-{i:08d}.mp4",
                    "size": 1000 + i % 5000,
                    "checksum": None,
                    "etag": f"e{i}",
                    "modified_at": old if i % 4 < 2 else young,
                    "first_seen_at": young,
                    "last_seen_at": young,
                    "state": "present",
                }
                for i in range(start, min(n, start + batch))
            ]
            bulk_execute(conn, objects.insert(), rows)
            bulk_execute(
                conn,
                refs.insert(),
                [
                    {"snapshot_id": snapshot, "tier": "local", "key": row["key"], "source": 0}
                    for index, row in enumerate(rows)
                    if (start + index) % 2 == 0
                ],
            )
    shelf.ledger.finish_snapshot(snapshot, rows=n // 2, unmatched=0, now=now)


def run(n: int, kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shelflife-bench-plan-") as tmp:
        work = Path(tmp)
        url, database = catalog_url(kind, work)
        app = work / "app.db"
        engine = create_engine(f"sqlite:///{app}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)"))
            conn.execute(text("CREATE INDEX ix_jobs_path ON jobs (path)"))
            conn.execute(text("INSERT INTO jobs (path) VALUES ('renders/000/job-00000000.mp4')"))
        engine.dispose()
        config = parse_config(
            {
                "catalog": {"url": url},
                "databases": {"app": {"url": f"sqlite:///{app}"}},
                "tiers": {
                    "local": {"url": f"file://{work / 'local'}", "capacity": f"{n * 3500}B"},
                    "cloud": {"url": f"file://{work / 'cloud'}"},
                },
                "references": [
                    {"database": "app", "table": "jobs", "column": "path", "on_expire": "null"}
                ],
                "rules": [
                    {
                        "id": "orphans",
                        "tier": "local",
                        "action": "collect-orphans",
                        "grace": "30d",
                        "max_fraction": 1.0,
                    },
                    {"id": "retention", "tier": "local", "action": "expire", "after": "90d"},
                    {
                        "id": "wm",
                        "tier": "local",
                        "action": "migrate",
                        "to": "cloud",
                        "when": "over-watermark",
                    },
                ],
            },
            base_dir=work,
            source="bench",
            env={},
        )
        shelf = Shelf.open(config)
        fill(shelf, n)
        figures: dict[str, float] = {}

        start = time.perf_counter()
        with shelf.catalog.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                select(objects.c.key, objects.c.size, objects.c.modified_at)
            )
            count = sum(len(rows) for rows in result.partitions(10_000))
        figures["select"] = time.perf_counter() - start
        assert count == n

        from shelflife.catalog.ledger import CandidateFilter

        snapshot_id = (shelf.ledger.latest_snapshot() or {})["id"]
        mark = shelf.ledger.create_mark(
            "orphans", "local", now=utcnow(), evaluated_at=utcnow(), snapshot_id=snapshot_id
        )
        start = time.perf_counter()
        marked, _ = shelf.ledger.mark_orphans(
            mark,
            "local",
            snapshot_id,
            cutoff=utcnow() - timedelta(days=30),
            now=utcnow(),
            selection=CandidateFilter(),
        )
        figures["anti-join"] = time.perf_counter() - start

        rules = choose_rules(shelf)
        from shelflife.catalog.view import CatalogInventory
        from shelflife.engine.planner import plan as pure_plan
        from shelflife.service.runs import tier_states

        start = time.perf_counter()
        inventory = CatalogInventory(
            shelf.catalog.engine, tier_states(shelf), snapshot_id=snapshot_id, now=utcnow()
        )
        result_plan = pure_plan(
            rules, inventory, utcnow(), tiers=["local", "cloud"], references=config.references
        )
        figures["plan"] = time.perf_counter() - start
        figures["rss"] = rss_mib()
        totals = result_plan.totals()
        figures["actions"] = float(len(result_plan.actions))
        print(
            f"  n={n:,}: plan {figures['plan']:.2f} s ({n / figures['plan']:,.0f} objects/s), "
            f"select {figures['select']:.2f} s, anti-join {figures['anti-join']:.2f} s "
            f"({marked:,} orphans); plan/select {figures['plan'] / figures['select']:.1f}x, "
            f"plan/anti-join {figures['plan'] / figures['anti-join']:.1f}x; "
            f"peak RSS {figures['rss']:.0f} MiB; totals {totals}",
            flush=True,
        )
        shelf.close()
        if database:
            admin = create_engine(PG, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--catalog", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(
        f"shelflife plan benchmark — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, catalog {args.catalog}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.catalog)


if __name__ == "__main__":
    main()
