"""Reference lookups by kind: what a batch re-check (and a migration's rewrite lookup)
costs for each way a column can hold references, against two references measured in
the same run: the floor (one indexed ``IN`` over the batch's exact values, what a
plain ``value`` column costs) and the naive approach (read every row and resolve it).

    .venv/bin/python bench/references.py [--rows N] [--batch B] [--repeat R]

PostgreSQL (``SHELFLIFE_BENCH_PG``), one table per kind with N rows, each naming one
object: a ``value`` column in its tier's spelling; a ``value`` column of percent-encoded
web URLs (such a column also gets a substring search, see README); a ``jsonb`` document;
a Markdown body (``text``). Each re-check asks for B keys of which half are named.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.gc import PG  # noqa: E402
from shelflife.config import parse_config  # noqa: E402
from shelflife.config.model import ReferenceConfig  # noqa: E402
from shelflife.model.locations import Locator  # noqa: E402
from shelflife.references.sources import ReferenceSource  # noqa: E402

CDN = "https://cdn.example.com/"
KINDS: dict[str, tuple[str, str, Any]] = {
    # name: (column type, kind, value of row i)
    "value": ("text", "value", lambda i: f"s3://bench/out/k{i:07d}.bin"),
    "value, encoded URLs": ("text", "value", lambda i: f"{CDN}k%20{i:07d}.bin"),
    "json": (
        "jsonb",
        "json",
        lambda i: f'{{"video": {{"src": "{CDN}k%20{i:07d}.bin"}}, "title": "clip {i}"}}',
    ),
    "text": (
        "text",
        "text",
        lambda i: f"# Post {i}\nSee ![render]({CDN}k%20{i:07d}.bin) for the result.",
    ),
}


def key_of(kind: str, i: int) -> str:
    return f"k{i:07d}.bin" if kind == "value" else f"k {i:07d}.bin"


def locator() -> Locator:
    raw = {
        "tiers": {
            "local": {"create": True, "url": "file:///tmp/bench-refs", "ref_format": CDN + "{key}"},
            "cloud": {"url": "s3://bench/out", "ref_format": "s3://bench/out/{key}"},
        }
    }
    return Locator(parse_config(raw, base_dir=Path("/tmp"), source="bench", env={}))


def fill(conn: psycopg.Connection[Any], name: str, column_type: str, rows: int, value: Any) -> None:
    conn.execute(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, v {column_type})")
    with conn.cursor().copy(f"COPY {name} (v) FROM STDIN") as copy:
        for i in range(rows):
            copy.write_row((value(i),))
    if column_type == "text":
        conn.execute(f"CREATE INDEX ON {name} (v)")
    conn.execute(f"ANALYZE {name}")


def timed(call: Any, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def measure(
    kind: str, name: str, engine: Any, resolver: Locator, args: argparse.Namespace
) -> tuple[str, float, float, float]:
    """(kind, re-check of one batch, the indexed floor, a read of every row), seconds."""
    column_type, declared, value = KINDS[kind]
    source = ReferenceSource(
        ReferenceConfig(database="app", table=name, column="v", kind=declared), engine, resolver
    )
    # half of the batch named by rows (spread over the table), half named by none
    step = max(1, args.rows // args.batch)
    named = [key_of(kind, i) for i in range(0, args.rows, step)][: args.batch // 2]
    keys = named + [f"absent/{n}.bin" for n in range(args.batch - len(named))]
    found: set[Any] = set()
    lookup = timed(lambda: found.update(source.naming(keys)), args.repeat)
    assert {loc.key for loc in found} >= set(named), kind  # the re-check found every row
    exact = [value(i) for i in range(0, args.rows, step)][: args.batch // 2]
    column = "CAST(v AS text)" if column_type == "jsonb" else "v"

    def floor() -> None:
        with engine.connect() as conn:
            conn.execute(
                text(f"SELECT v FROM {name} WHERE {column} = ANY(:values)"), {"values": exact}
            ).all()

    def naive() -> None:
        wanted = set(keys)
        for batch in source.iter_references():
            for ref in batch:
                _ = [loc for loc in ref.locations if loc.key in wanted]

    return kind, lookup, timed(floor, args.repeat), timed(naive, max(1, args.repeat // 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--trigram", action="store_true", help="give json and text columns the index check suggests"
    )
    args = parser.parse_args()
    url = PG.replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url)
    resolver = locator()
    suffix = uuid.uuid4().hex[:8]
    tables = {kind: f"bench_refs_{n}_{suffix}" for n, kind in enumerate(KINDS)}
    print(
        f"{platform.machine()} {platform.python_version()} rows={args.rows} "
        f"batch={args.batch} trigram={args.trigram}"
    )
    results = []
    try:
        with psycopg.connect(PG, autocommit=True) as conn:
            for kind, (column_type, declared, value) in KINDS.items():
                fill(conn, tables[kind], column_type, args.rows, value)
                if args.trigram and declared in ("json", "text"):
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                    conn.execute(
                        f"CREATE INDEX ON {tables[kind]} USING gin ((lower(v::text)) gin_trgm_ops)"
                    )
                    conn.execute(f"ANALYZE {tables[kind]}")
        for kind in KINDS:
            results.append(measure(kind, tables[kind], engine, resolver, args))
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            for name in tables.values():
                conn.execute(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()
    print()
    print(
        "| column | re-check of a batch | indexed IN (floor) | read every row "
        "| × floor | share of a full read |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, lookup, floor_s, naive_s in results:
        print(
            f"| {kind} | {lookup * 1000:.1f} ms | {floor_s * 1000:.1f} ms | {naive_s:.2f} s "
            f"| {lookup / floor_s:.1f}× | {lookup / naive_s:.1%} |"
        )


if __name__ == "__main__":
    main()
