"""The action log at scale: writing, looking up and pruning 10^6 entries.

    .venv/bin/python bench/actionlog.py [--entries 1000000] [--catalog sqlite|postgresql]

Writes N entries through :class:`~shelflife.catalog.actionlog.ActionLog` (the batches of
1,000 rows a run's end writes), the older half recorded 200 days ago; then times a
``--key`` lookup (the page query, by its index), a JSON lines export of every entry
(keyset pages of 1,000) and a prune of the old half (batches of 10,000, one transaction
each), with the longest single prune batch beside the whole: what a run's end may wait
for per batch. The reference is the run's own write of its outcomes, so the figures are
per entry. PostgreSQL uses ``$SHELFLIFE_BENCH_PG`` (default: the local server's
``postgres`` database, in a throw-away schema).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shelflife.catalog import Catalog
from shelflife.catalog.actionlog import PRUNE_BATCH, ActionLog, LogEntry, LogFilter

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PG = os.environ.get("SHELFLIFE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def entries(count: int) -> list[LogEntry]:
    old, young = T0 - timedelta(days=200), T0
    return [
        LogEntry(
            recorded_at=old if i < count // 2 else young,
            command="run",
            action="expire",
            tier="local",
            key=f"outputs/{i % 1000:03d}/{i:08d}.mp4",
            outcome="done",
            run_id=f"run-{i // 10_000}",
            rule="retention",
            bytes=i,
            reason="retention: older than after = 90 days (counted from created …)",
            age="created",
            aged_from=old,
        )
        for i in range(count)
    ]


def catalog_for(kind: str, folder: Path) -> tuple[Catalog, str | None]:
    if kind == "sqlite":
        return Catalog.open(f"sqlite:///{folder / 'catalog.db'}"), None
    from sqlalchemy import create_engine, make_url, text

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(PG)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = make_url(PG).update_query_dict({"options": f"-csearch_path={schema}"})
    return Catalog.open(url.render_as_string(hide_password=False)), schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--catalog", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        catalog, schema = catalog_for(args.catalog, Path(folder))
        log = ActionLog(catalog.engine)
        batch = entries(args.entries)
        started = time.perf_counter()
        log.write(batch)
        wrote = time.perf_counter() - started
        del batch

        started = time.perf_counter()
        found = log.page(LogFilter(keys=("outputs/077/00000077.mp4",)))
        lookup = time.perf_counter() - started
        assert [e.key for e in found] == ["outputs/077/00000077.mp4"]

        started = time.perf_counter()
        exported = sum(1 for e in log.stream(LogFilter()) if json.dumps(e.as_json()))
        export = time.perf_counter() - started
        assert exported == args.entries

        longest, removed = 0.0, 0
        started = time.perf_counter()
        while True:
            one = time.perf_counter()
            gone, _ = log.prune(T0 - timedelta(days=100), budget=0)
            longest = max(longest, time.perf_counter() - one)
            removed += gone
            if gone < PRUNE_BATCH:
                break
        pruned = time.perf_counter() - started
        assert removed == args.entries // 2
        catalog.close()
        if schema:
            from sqlalchemy import create_engine, text

            engine = create_engine(PG)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()

    n = args.entries
    print(f"action log, {n:,} entries, {args.catalog} catalog")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}")
    print(f"write:   {wrote:8.2f} s  {n / wrote:12,.0f} entries/s (batches of 1,000)")
    print(f"--key:   {lookup * 1000:8.2f} ms (index ix_action_log_key)")
    print(f"export:  {export:8.2f} s  {n / export:12,.0f} entries/s (pages read, JSON lines)")
    print(
        f"prune:   {pruned:8.2f} s  {removed / pruned:12,.0f} entries/s; longest batch "
        f"{longest * 1000:.0f} ms ({PRUNE_BATCH:,} entries)"
    )


if __name__ == "__main__":
    main()
