"""Marking by merge against the snapshot's anti-join: on the same inventory and the same
rows, both must say the same thing about every object — which are orphans, which sources
name the others, how many each tier holds — for every byte-order trap, spelling and tier
layout. Application tables on SQLite, and on the real PostgreSQL and MariaDB servers."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelflife.catalog import Catalog
from shelflife.catalog.view import CatalogInventory
from shelflife.config import parse_config
from shelflife.engine import trust
from shelflife.engine.context import Context
from shelflife.model.selection import Selection, TierState
from shelflife.references.ordered import LOOSE_LIMIT, SortedReferences
from shelflife.service.shelf import Shelf
from tests.support.apps import AppTable

NOW = datetime(2026, 6, 1, tzinfo=UTC)
# Keys whose byte order differs from a locale's, a walk's or a naive one's.
TRAPS = ["a/b", "a-c", "a.b", "a b", "a0", "A", "B", "b", "é", "ä/x", "z", "🎬/x", "a%20b", "a?b"]
TIERS = {
    "hot": {"url": "memory://hot", "ref_format": "data/hot/{key}"},
    # a tier nested in another's spelling: values under it name both
    "nested": {"url": "memory://nested", "ref_format": "data/hot/nested/{key}"},
    "cold": {
        "url": "memory://cold",
        "ref_format": "s3://bucket/cold/{key}",
        "ref_aliases": ["https://cdn.example.com/cold/{key}"],
    },
    "bare": {"url": "memory://bare"},  # rows hold the bare key
}


def spellings(tier: str, key: str) -> list[str]:
    """Ways a row may spell ``key`` on ``tier``: the plain one and some the resolver
    reads otherwise (percent-encoded, padded, with a query string)."""
    if tier == "hot":
        return [f"data/hot/{key}", f"  data/hot/{key}"]
    if tier == "nested":
        return [f"data/hot/nested/{key}"]
    if tier == "cold":
        return [
            f"s3://bucket/cold/{key}",
            f"s3://bucket/cold/{quote(key)}",
            f"https://cdn.example.com/cold/{quote(key)}?sig=1",
        ]
    return [key, f"{key} "]


KEY = st.one_of(
    st.sampled_from(TRAPS),
    st.text(alphabet=st.sampled_from(list("ab-./ 0Zé🎬%")), min_size=1, max_size=5),
).filter(
    lambda key: (
        key[0] != "/"
        and key[-1] != "/"
        and "//" not in key
        and key.strip() == key
        and not any(part in (".", "..") for part in key.split("/"))
    )
)


@st.composite
def layouts(draw: Any) -> tuple[dict[str, list[str]], list[str]]:
    """Objects per tier, and the values of the rows."""
    held = {
        tier: sorted(set(draw(st.lists(KEY, max_size=12)))) for tier in ("hot", "nested", "cold")
    }
    held["bare"] = sorted(set(draw(st.lists(KEY, max_size=4))))
    values: list[str] = []
    for _ in range(draw(st.integers(0, 25))):
        tier = draw(st.sampled_from(list(TIERS)))
        pool = held[tier] + draw(st.lists(KEY, max_size=1))  # sometimes a dangling one
        if not pool:
            continue
        key = draw(st.sampled_from(pool))
        values.append(draw(st.sampled_from(spellings(tier, key))))
    values += draw(st.lists(st.sampled_from(["", "   ", "nothing://x", "other/thing"]), max_size=2))
    return held, values


@functools.cache
def _empty_catalog() -> Path:
    """A catalog at the newest schema, made once: each example starts from a copy."""
    folder = Path(tempfile.mkdtemp(prefix="shelflife-marking-"))
    Catalog.open(f"sqlite:///{folder / 'catalog.db'}").close()
    return folder / "catalog.db"


def open_context(folder: Path, app: Any) -> Shelf:
    if not (folder / "catalog.db").exists():
        shutil.copy(_empty_catalog(), folder / "catalog.db")
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{folder / 'catalog.db'}"},
        "tiers": {name: dict(tier) for name, tier in TIERS.items()},
        "databases": {"app": {"url": app.url}},
        "references": [
            {
                "database": "app",
                "table": app.name,
                "column": getattr(app, "column", "path"),
                "max_unmatched": 1.0,
            }
        ],
    }
    return Shelf.open(parse_config(raw, base_dir=folder, source="test", env={}))


def compare(held: dict[str, list[str]], values: list[str], app_url: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = AppTable(app_url)
        try:
            app.insert(*values) if values else None
            shelf = open_context(Path(folder), app)
            try:
                check_both_ways(shelf.context, held)
            finally:
                shelf.close()
        finally:
            with app.engine.begin() as conn:
                app.table.drop(conn)
            app.dispose()


def check_both_ways(context: Context, held: dict[str, list[str]]) -> None:
    for tier, keys in held.items():
        context.catalog.write_listed(
            tier, [(key, len(key), "e", 1_000, None) for key in keys], NOW, new=set(keys)
        )
    sources = context.sources()
    naming, snapshot_id, report = trust.read_references(context, sources)
    assert isinstance(naming, SortedReferences)  # value columns: read in byte order
    assert snapshot_id is None
    snapshot, copied = trust.snapshot(context, sources)
    assert (report.rows, report.unmatched, report.parsed) == (
        copied.rows,
        copied.unmatched,
        copied.parsed,
    )
    assert report.distrusted(context.locator, list(TIERS)) == copied.distrusted(
        context.locator, list(TIERS)
    )
    states = {tier: TierState(tier) for tier in TIERS}
    engine = context.catalog.engine
    by_join = CatalogInventory(engine, states, snapshot_id=snapshot, now=NOW)
    before = NOW + timedelta(days=1)
    stored = context.ledger.reference_counts(snapshot)
    # the merge goes a page of the inventory at a time: pages of one and a few keys put
    # names on every page boundary
    for page in (1, 3, 1000):
        by_merge = CatalogInventory(
            engine, states, snapshot_id=None, now=NOW, naming=naming, batch_size=page
        )
        for tier in TIERS:
            for unreferenced in (True, False):
                chosen = Selection(before=before, unreferenced=unreferenced, named=True)
                merged = {o.key: o.refs for o in by_merge.objects(tier, "oldest", chosen)}
                joined = {o.key: o.refs for o in by_join.objects(tier, "oldest", chosen)}
                assert merged == joined, (tier, unreferenced, page)
        context.catalog.scan_page = page
        counted = trust.count_named(context, naming)
        for tier in TIERS:
            referenced = stored[tier].referenced_objects if tier in stored else 0
            assert counted[tier][0] == referenced, (tier, page)
    naming.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts())
def test_merge_and_anti_join_mark_the_same_objects(layout: Any) -> None:
    held, values = layout
    with tempfile.TemporaryDirectory() as folder:
        compare(held, values, f"sqlite:///{Path(folder) / 'app.db'}")


TRAP_LAYOUT = (
    {
        "hot": sorted([*TRAPS, "nested/n1", "x/y"]),
        "nested": ["n1", "n2", "a-c"],
        "cold": sorted(TRAPS),
        "bare": ["a/b", "bare-only"],
    },
    [
        *(f"data/hot/{key}" for key in TRAPS[::2]),
        "data/hot/nested/n1",
        "data/hot/nested/n2",
        "data/hot/gone-from-hot",  # dangling: protects it on the other tiers
        *(f"s3://bucket/cold/{quote(key)}" for key in TRAPS[1::3]),
        *(f"s3://bucket/cold/{key}" for key in TRAPS[::3]),
        "https://cdn.example.com/cold/a%20b?X-Amz-Signature=1",
        "a/b",
        "bare-only ",
        "  data/hot/a0",
    ],
)


@pytest.mark.postgres
def test_merge_agrees_on_postgresql(pg_url: str) -> None:
    """PostgreSQL's default collation does not sort bytewise; the read asks for "C"."""
    compare(*TRAP_LAYOUT, pg_url)


def test_merge_agrees_on_mariadb(mariadb_url: str) -> None:
    """MariaDB's default collation ignores case and trailing blanks; the read sorts bytes."""
    compare(*TRAP_LAYOUT, mariadb_url)


def test_merge_agrees_on_sqlite(tmp_path: Path) -> None:
    compare(*TRAP_LAYOUT, f"sqlite:///{tmp_path / 'app.db'}")


def test_a_source_not_in_byte_order_takes_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that does not return the values in byte order (a fault injected here:
    the read comes back reversed) is found out while reading: the references are then
    copied into the catalog and compared there, and nothing is decided on the bad order."""
    from shelflife.references import ordered

    real = ordered._sorted_values

    def reversed_values(source: Any) -> Iterator[list[Any]]:
        for values in real(source):
            yield values[::-1]

    monkeypatch.setattr(ordered, "_sorted_values", reversed_values)
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    app.insert(*(f"data/hot/{key}" for key in ["b", "B", "a", "A"]))
    shelf = open_context(tmp_path, app)
    try:
        naming, snapshot_id, report = trust.read_references(shelf.context, shelf.context.sources())
        assert naming is None
        assert snapshot_id is not None
        assert report.rows == 4
    finally:
        shelf.close()
        app.dispose()


def test_too_many_loose_spellings_take_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    app.insert(*(f"  data/hot/k{i}" for i in range(50)))  # padded: read by the resolver
    monkeypatch.setattr("shelflife.references.ordered.LOOSE_LIMIT", 10)
    shelf = open_context(tmp_path, app)
    try:
        naming, snapshot_id, report = trust.read_references(shelf.context, shelf.context.sources())
        assert naming is None
        assert snapshot_id is not None
        assert report.rows == 50
    finally:
        shelf.close()
        app.dispose()
    assert LOOSE_LIMIT > 10


@pytest.fixture
def trap_shelf(tmp_path: Path) -> Iterator[Shelf]:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    app.insert(*TRAP_LAYOUT[1])
    shelf = open_context(tmp_path, app)
    yield shelf
    shelf.close()
    app.dispose()


def test_stats_after_a_merge_count_what_the_references_name(trap_shelf: Shelf) -> None:
    context = trap_shelf.context
    held = TRAP_LAYOUT[0]
    for tier, keys in held.items():
        context.catalog.write_listed(
            tier, [(key, 1, "e", 1_000, None) for key in keys], NOW, new=set(keys)
        )
    trap_shelf.refresh_references()
    merged = {name: tier.referenced_objects for name, tier in _by_name(trap_shelf).items()}
    snapshot, _ = trust.snapshot(context, context.sources())
    joined = context.ledger.reference_counts(snapshot)
    assert merged == {tier: joined[tier].referenced_objects for tier in held}
    assert merged["hot"] > 0


def _by_name(shelf: Shelf) -> dict[str, Any]:
    return {tier.name: tier for tier in shelf.usage()}


@pytest.mark.postgres
def test_a_column_no_collation_orders_takes_the_general_path(pg_url: str, tmp_path: Path) -> None:
    """A uuid column (bare keys) cannot be ordered COLLATE "C": PostgreSQL would refuse
    the query, and every plan with it. It is compared by snapshot instead."""
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE uploads (id serial PRIMARY KEY, blob uuid)"))
        conn.execute(
            text("INSERT INTO uploads (blob) VALUES ('6f1c8a52-2d7a-4c8e-9b1e-0d6f1a2b3c4d')")
        )
    engine.dispose()
    shelf = open_context(tmp_path, _App(pg_url, "uploads", "blob"))
    try:
        context = shelf.context
        context.catalog.write_listed(
            "bare", [("6f1c8a52-2d7a-4c8e-9b1e-0d6f1a2b3c4d", 1, "e", 1_000, None)], NOW
        )
        naming, snapshot_id, report = trust.read_references(context, context.sources())
        assert naming is None
        assert snapshot_id is not None
        assert report.parsed == 1
    finally:
        shelf.close()


class _App:
    """An application table made by the test itself (its column need not be text)."""

    def __init__(self, url: str, name: str, column: str) -> None:
        self.url, self.name, self.column = url, name, column
