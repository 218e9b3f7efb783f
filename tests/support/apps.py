"""A small application for tests: a table whose rows point at objects, and a shelf over it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    select,
)

from shelflife import Shelf
from shelflife.config import parse_config


class AppTable:
    """``jobs_<random>(id, path)`` in an application database, indexed on ``path``."""

    def __init__(self, url: str, *, index: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.name = f"jobs_{uuid.uuid4().hex[:8]}"
        metadata = MetaData()
        self.table = Table(
            self.name,
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("path", String(700)),
        )
        if index:
            Index(f"ix_{self.name}_path", self.table.c.path)
        metadata.create_all(self.engine)

    def insert(self, *values: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [{"path": value} for value in values])

    def delete(self, value: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.path == value))

    def values(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(str(v) for v in conn.execute(select(self.table.c.path)).scalars())

    def rows(self) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(self.table).order_by(self.table.c.id))]

    def dispose(self) -> None:
        self.engine.dispose()


def make_app_shelf(
    tmp_path: Path,
    app: AppTable | None,
    *,
    tiers: dict[str, dict[str, Any]] | None = None,
    rules: Iterable[dict[str, Any]] = (),
    health: dict[str, Any] | None = None,
    on_expire: str | None = None,
    executor: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> Shelf:
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": tiers
        or {
            "local": {
                "url": f"file://{tmp_path / 'outputs'}",
                "ref_format": "data/storage/outputs/{key}",
                "ref_aliases": ["/workspace/outputs/{key}"],
                "create": True,
            },
        },
        "rules": list(rules),
    }
    for tier in raw["tiers"].values():  # tests make their folders as they write into them
        if str(tier["url"]).startswith("file://"):
            tier.setdefault("create", True)
    if app is not None:
        raw["databases"] = {"app": {"url": app.url}}
        raw["references"] = [{"database": "app", "table": app.name, "column": "path"}]
        if on_expire:
            raw["references"][0]["on_expire"] = on_expire
        raw["references"][0].update(reference or {})
    if executor:
        raw["executor"] = executor
    if health:
        raw["health"] = health
    return Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))


def orphan_rule(**extra: Any) -> dict[str, Any]:
    return {
        "id": "orphans",
        "tier": "*",
        "action": "collect-orphans",
        "grace": "0s",
        "max_fraction": 1.0,
        **extra,
    }


def wait_for_triggers(engine: Any, table_name: str, count: int = 1) -> None:
    """Wait until ``shelflife listen`` has installed ``count`` release triggers on a
    PostgreSQL table (and has had time to LISTEN)."""
    import time

    from sqlalchemy import text

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'shelflife_release_%' "
                    "AND tgrelid = CAST(:table AS regclass)"
                ),
                {"table": table_name},
            ).scalar_one()
        if found >= count:
            time.sleep(0.5)  # LISTEN follows the trigger installation
            return
        time.sleep(0.1)
    raise AssertionError("shelflife listen did not install its triggers")
