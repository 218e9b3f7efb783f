"""The catalog on SQLite and on the real PostgreSQL server: schema, inventory, scans."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shelflife.catalog import Catalog
from shelflife.config.model import TierConfig
from shelflife.engine.scan import scan_tier
from shelflife.errors import CatalogError
from shelflife.stores import ObjectInfo, open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def info(key: str, size: int = 10, etag: str | None = "e1", at: datetime = T0) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, modified=at, etag=etag)


def head_revision() -> str | None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from shelflife.catalog.catalog import MIGRATIONS

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def test_schema_is_at_head_and_opening_again_is_a_no_op(catalog: Catalog) -> None:
    from shelflife.catalog.catalog import HEAD_REVISION

    head = head_revision()
    assert head == HEAD_REVISION  # the constant the fast path compares with
    assert catalog.revision() == head
    catalog.migrate()
    assert catalog.revision() == head


def test_upgrading_from_the_first_revision_keeps_the_inventory(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from shelflife.catalog.catalog import MIGRATIONS, create_catalog_engine

    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001_inventory")
    from shelflife.catalog.schema import to_micros

    modified, seen = T0 - timedelta(days=40), T0
    with engine.begin() as conn:  # a row as the first revision wrote it
        conn.exec_driver_sql(
            "INSERT INTO objects (tier, key, size, checksum, etag, modified_at, first_seen_at, "
            "last_seen_at, state) VALUES ('t', 'kept', 3, 'sha256:x', 'e', ?, ?, ?, 'present')",
            (to_micros(modified), to_micros(seen), to_micros(seen)),
        )
    upgraded = Catalog.open(f"sqlite:///{tmp_path / 'old.db'}")
    assert upgraded.revision() == head_revision()
    row = upgraded.get("t", "kept")
    assert row is not None
    assert row.checksum == "sha256:x"
    # 0010: what is known of an existing row's creation and arrival is its earlier instant
    assert (row.created_at, row.arrived_at) == (modified, modified)


def test_scan_upserts_and_forgets_objects_no_longer_listed(catalog: Catalog) -> None:
    first = catalog.begin_scan("t", T0)
    catalog.upsert_listed("t", [info("a"), info("b"), info("c")], T0, first)
    assert catalog.finish_scan("t", first, T0, T0) == 0
    later = T0 + timedelta(hours=1)
    second = catalog.begin_scan("t", later)
    catalog.upsert_listed("t", [info("a"), info("c", size=20)], later, second)
    assert catalog.finish_scan("t", second, later, later) == 1
    assert [o.key for o in catalog.iter_objects("t")] == ["a", "c"]
    assert catalog.totals()["t"].bytes == 30
    last = catalog.last_scan("t")
    assert last is not None
    assert (last["objects"], last["bytes"], last["removed"]) == (2, 30, 1)


def test_an_upload_during_a_scan_is_not_forgotten(catalog: Catalog) -> None:
    started = T0
    scan = catalog.begin_scan("t", started)
    catalog.upsert_listed("t", [info("a")], started, scan)
    # The listing passed "m" before the upload created it.
    catalog.record_put(
        "t", "m", size=5, checksum="sha256:x", etag="e", now=started + timedelta(seconds=1)
    )
    catalog.finish_scan("t", scan, started, started + timedelta(seconds=2))
    assert [o.key for o in catalog.iter_objects("t")] == ["a", "m"]


def test_checksum_is_kept_while_unchanged_and_dropped_when_the_object_changes(
    catalog: Catalog,
) -> None:
    catalog.record_put("t", "k", size=10, checksum="sha256:abc", etag="e1", now=T0)
    catalog.upsert_listed("t", [info("k", size=10, etag="e1")], T0)
    row = catalog.get("t", "k")
    assert row is not None
    assert row.checksum == "sha256:abc"
    catalog.upsert_listed("t", [info("k", size=10, etag="e2")], T0)
    row = catalog.get("t", "k")
    assert row is not None
    assert row.checksum is None


def test_keys_are_ordered_by_bytes_and_paginated(catalog: Catalog) -> None:
    keys = ["a/b", "a-c", "a.b", "B", "b", "ä", "a b", "Z", "🎬", "a/b/c"]
    catalog.upsert_listed("t", [info(k) for k in keys], T0)
    listed = [o.key for o in catalog.iter_objects("t", batch_size=3)]
    assert listed == sorted(keys, key=lambda k: k.encode())
    assert [o.key for o in catalog.iter_objects("t", prefix="a/")] == ["a/b", "a/b/c"]


def test_times_come_back_aware_in_utc(catalog: Catalog) -> None:
    catalog.record_put("t", "k", size=1, checksum=None, etag=None, now=T0)
    row = catalog.get("t", "k")
    assert row is not None
    assert row.modified_at == T0
    assert row.modified_at.tzinfo is not None
    assert row.state == "present"
    catalog.touch("t", ["k"], T0 + timedelta(days=1))
    row = catalog.get("t", "k")
    assert row is not None
    assert row.last_accessed_at == T0 + timedelta(days=1)


def test_forget_and_locate(catalog: Catalog) -> None:
    catalog.upsert_listed("hot", [info("k")], T0)
    catalog.upsert_listed("cold", [info("k")], T0)
    assert sorted(o.tier for o in catalog.locate("k")) == ["cold", "hot"]
    catalog.forget("hot", ["k"])
    assert [o.tier for o in catalog.locate("k")] == ["cold"]


def test_scan_of_a_real_store_streams_into_the_catalog(catalog: Catalog, tmp_path: Path) -> None:
    store = open_store(TierConfig(url=f"file://{tmp_path / 'tier'}", create=True))

    async def fill() -> None:
        await asyncio.gather(*(store.put(f"d{i % 7}/obj-{i:04d}", b"x" * i) for i in range(2500)))

    asyncio.run(fill())
    result = asyncio.run(scan_tier(catalog, "local", store))
    assert result.objects == 2500
    assert result.bytes == sum(range(2500))
    assert catalog.totals()["local"].objects == 2500
    asyncio.run(store.delete_many([f"d{i % 7}/obj-{i:04d}" for i in range(100)]))
    again = asyncio.run(scan_tier(catalog, "local", store))
    assert again.removed == 100
    assert catalog.totals()["local"].objects == 2400


def test_unreachable_catalog_is_a_clear_error() -> None:
    with pytest.raises(CatalogError, match="cannot use the catalog") as caught:
        Catalog.open("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert caught.value.hint is not None


def test_a_large_plan_is_read_back_as_it_was_written(catalog: Catalog) -> None:
    """Plan items go in batches (by COPY on PostgreSQL past a few hundred rows, by one
    compiled statement on SQLite): every action and skip comes back, in order, with
    every field, NULLs and awkward keys included."""
    from shelflife.catalog.plans import PlanStore
    from shelflife.model.actions import Action, Skip

    store = PlanStore(catalog.engine, "plan-large", write_batch=700)
    keys = [f"d{i % 7}/é \\\t{i:05d}" for i in range(1500)]
    actions = [
        Action(
            "migrate" if i % 2 else "delete-orphan",
            "r",
            "hot",
            key,
            i,
            to="cold" if i % 2 else None,
            etag=None if i % 3 else f'"{i}"',
            modified=T0 + timedelta(microseconds=i),
            rows={"app.t.path": "null"} if i % 5 == 0 else None,
            age="modified",
            aged_from=T0,
        )
        for i, key in enumerate(keys)
    ]
    for i, action in enumerate(actions):
        store.add_action(action)
        if i % 100 == 0:
            store.add_skip(Skip("r", "hot", action.key, "pinned"))
    store.flush()
    assert list(store.actions()) == actions
    assert [skip.key for skip in store.skipped()] == keys[::100]
