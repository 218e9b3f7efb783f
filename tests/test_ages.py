"""Ages that survive moves (DESIGN I9): a migration or a recall keeps an object's
``created`` instant, in the catalog and on the copy, so rules on the destination mean what
an operator reads in them, and a catalog rebuilt by a scan still knows it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.config.model import RuleConfig
from shelflife.engine.planner import plan
from shelflife.model.selection import ObjectView, TierState
from tests.support.apps import AppTable, make_app_shelf
from tests.support.figures import Figures
from tests.support.objects import no_leases, read
from tests.support.planning import ListInventory
from tests.support.servers import tier_config

DAY = timedelta(days=1)
AGES = {"logs/a.log": 35, "logs/b.log": 60, "logs/c.log": 140}
RULES: list[dict[str, Any]] = [
    {"id": "archive", "tier": "hot", "action": "migrate", "to": "cold", "after": "30d"},
    {"id": "cold-retention", "tier": "cold", "action": "expire", "after": "25d"},
    {
        "id": "cold-arrivals",
        "tier": "cold",
        "action": "expire",
        "after": "25d",
        "age": "arrived",
    },
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppTable]:
    table = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    yield table
    table.dispose()


def shelf_for(tmp_path: Path, app: AppTable, cold: dict[str, Any]) -> Shelf:
    tiers = {
        "hot": {"url": f"file://{tmp_path / 'hot'}", "ref_format": "hot/{key}", "create": True},
        "cold": cold,
    }
    return make_app_shelf(tmp_path, app, tiers=tiers, rules=RULES, on_expire="null")


def write_aged(shelf: Shelf, now: datetime) -> dict[str, bytes]:
    """Log files written by the application (not through shelflife), days old."""
    root = Path(shelf.store("hot").location.removeprefix("file://"))
    written = {}
    for key, days in AGES.items():
        data = key.encode() * 100
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stamp = (now - days * DAY).timestamp()
        os.utime(path, (stamp, stamp))
        written[key] = data
    return written


def created_days(shelf: Shelf, tier: str, now: datetime) -> dict[str, int]:
    ages = {}
    for row in shelf.catalog.iter_objects(tier):
        assert row.created_at is not None
        ages[row.key] = round((now - row.created_at) / DAY)
    return ages


def expiry_plan(shelf: Shelf, rule: str) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = shelf.expire(dry_run=True, rule=rule).as_json()["actions"]
    return actions


@pytest.mark.invariant("I9")
@pytest.mark.parametrize(
    "kind",
    [
        "file",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("azure", marks=pytest.mark.azure),
    ],
)
def test_a_move_keeps_the_age_rules_count_from(
    kind: str, tmp_path: Path, app: AppTable, request: pytest.FixtureRequest, figures: Figures
) -> None:
    cold = tier_config(kind, request, tmp_path / "cold")
    cold.setdefault("ref_format", "cold/{key}")
    shelf = shelf_for(tmp_path, app, cold)
    now = datetime.now(UTC)
    written = write_aged(shelf, now)
    app.insert(*(f"hot/{key}" for key in AGES))

    moved = shelf.run(rule="archive")
    assert sorted(a.key for a in moved.actions) == sorted(AGES)
    assert sorted(app.values()) == sorted(str(cold["ref_format"]).format(key=k) for k in AGES)
    assert {key: read(shelf, "cold", key) for key in AGES} == written
    # The catalog keeps when each object was created and modified, not when it was copied.
    assert created_days(shelf, "cold", now) == AGES
    if kind == "file":  # a local tier keeps the source's mtime on the copy, as cp -p does
        path = Path(shelf.store("cold").location.removeprefix("file://")) / "logs/b.log"
        assert round((now.timestamp() - path.stat().st_mtime) / 86400) == 60

    # A 25-day expire rule on the destination selects objects created 35+ days ago,
    # and the plan says which instant it counted from.
    planned = expiry_plan(shelf, "cold-retention")
    assert sorted(a["key"] for a in planned) == sorted(AGES)
    for action in planned:
        assert action["age"] == "created"
        aged = datetime.fromisoformat(action["aged_from"])
        assert round((now - aged) / DAY) == AGES[action["key"]]
    # Counted from their arrival on the tier, they are minutes old.
    assert expiry_plan(shelf, "cold-arrivals") == []

    # A recall brings the age back with the object.
    shelf.recall(str(cold["ref_format"]).format(key="logs/a.log"), to="hot")
    assert created_days(shelf, "hot", now) == {"logs/a.log": 35}
    no_leases(shelf)

    # A catalog rebuilt by a scan, after deleting it, still knows when objects were created:
    # on object stores from the copy's metadata, on a local tier from the kept mtime.
    shelf.close()
    (tmp_path / "catalog.db").unlink()
    rebuilt = shelf_for(tmp_path, app, cold)
    rebuilt.scan()
    assert created_days(rebuilt, "cold", now) == {"logs/b.log": 60, "logs/c.log": 140}
    assert sorted(a["key"] for a in expiry_plan(rebuilt, "cold-retention")) == [
        "logs/b.log",
        "logs/c.log",
    ]
    assert expiry_plan(rebuilt, "cold-arrivals") == []
    figures.add("ages across moves", objects_moved=len(AGES), recalled=1, catalogs_rebuilt=1)


def rule(**fields: Any) -> RuleConfig:
    base = {"id": "r", "tier": "t", "action": "expire", "after": "25d"}
    return RuleConfig.model_validate({**base, **fields})


NOW = datetime(2026, 6, 1, tzinfo=UTC)
MOVED = ObjectView(
    "moved",
    10,
    modified=NOW - 50 * DAY,
    accessed=NOW - 1 * DAY,
    created=NOW - 60 * DAY,
    arrived=NOW - 2 * DAY,
)


@pytest.mark.invariant("I9")
@pytest.mark.parametrize(
    ("fields", "selected"),
    [
        ({}, True),  # expire counts from creation by default
        ({"age": "arrived"}, False),
        ({"age": "modified"}, True),
        ({"age": "last-access"}, False),
        ({"action": "collect-orphans", "after": None, "grace": "55d", "max_fraction": 1}, True),
        ({"action": "collect-orphans", "after": None, "grace": "65d", "max_fraction": 1}, False),
        ({"action": "migrate", "to": "u", "after": "55d"}, False),  # by modification
        ({"action": "migrate", "to": "u", "after": "55d", "age": "created"}, True),
    ],
)
def test_a_rule_counts_age_from_the_instant_it_names(
    fields: dict[str, Any], selected: bool
) -> None:
    chosen = rule(**fields)
    state = TierState("t", objects=1)
    inventory = ListInventory({"t": [MOVED]}, {"t": state})
    result = plan([chosen], inventory, NOW, tiers=["t", "u"])
    assert [a.key for a in result.actions] == (["moved"] if selected else [])


def test_least_recently_used_counts_from_the_last_access_by_default() -> None:
    lru = rule(action="migrate", to="u", after="3d", order="least-recently-used")
    assert lru.age_basis == "last-access"
    assert rule().age_basis == "created"
    with pytest.raises(ValueError, match="age"):
        rule(age="birthday")
