"""Migration under watermarks: arithmetic, the protocol on real stores and databases, faults
(DESIGN I1, I2, I5)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.catalog.lock import RunLock
from shelflife.config.model import RuleConfig
from shelflife.engine.planner import plan
from shelflife.errors import LockedError
from shelflife.model.selection import ObjectView, TierState
from tests.support.apps import AppTable, make_app_shelf
from tests.support.cli import SHELFLIFE
from tests.support.objects import read
from tests.support.planning import ListInventory
from tests.support.servers import tier_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def watermark_plan(used: int, sizes: list[int]) -> list[str]:
    """What the one planner moves off a 1000-byte tier at 80 % / 70 %, oldest first."""
    held = [ObjectView(f"k{i}", size, T0 + timedelta(minutes=i)) for i, size in enumerate(sizes)]
    state = TierState("local", used=used, capacity=1000, high=0.8, low=0.7, objects=len(held))
    inventory = ListInventory({"local": held}, {"local": state})
    rule = RuleConfig.model_validate(
        {
            "id": "spill",
            "tier": "local",
            "action": "migrate",
            "to": "cloud",
            "when": "over-watermark",
        }
    )
    result = plan([rule], inventory, T0 + timedelta(days=1), tiers=["local", "cloud"])
    return [a.key for a in result.actions]


@pytest.mark.parametrize(
    ("used", "sizes", "expected"),
    [
        (800, [100, 100], []),  # exactly at the high mark: nothing moves
        (801, [100, 100, 100], ["k0", "k1"]),  # 801 → 701 → 601 ≤ 700
        (900, [200, 5, 5], ["k0"]),  # 700 is at the low mark: stop there exactly
        (900, [199, 5, 5], ["k0", "k1"]),  # 701 is above: one more
        (1000, [10] * 10, [f"k{i}" for i in range(10)]),  # not enough to reach it: all
        (950, [300, 1, 1], ["k0"]),  # order is respected even when a smaller one would do
    ],
)
def test_watermark_arithmetic(used: int, sizes: list[int], expected: list[str]) -> None:
    assert watermark_plan(used, sizes) == expected


def two_tier_shelf(
    tmp_path: Path,
    app: AppTable | None,
    dst: dict[str, Any] | None = None,
    *,
    order: str = "oldest",
    capacity: str = "1000B",
    min_size: str | None = None,
) -> Shelf:
    rule: dict[str, Any] = {
        "id": "spill",
        "tier": "local",
        "action": "migrate",
        "to": "cloud",
        "when": "over-watermark",
        "order": order,
    }
    if min_size:
        rule["min_size"] = min_size
    tiers = {
        "local": {
            "url": f"file://{tmp_path / 'local'}",
            "create": True,
            "ref_format": "data/out/{key}",
            "ref_aliases": ["/workspace/out/{key}"],
            "capacity": capacity,
            "high_watermark": "80%",
            "low_watermark": "70%",
        },
        "cloud": dst
        or {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    return make_app_shelf(tmp_path, app, tiers=tiers, rules=[rule])


def put_aged(
    shelf: Shelf, key: str, size: int, age_days: float, *, at: datetime | None = None
) -> bytes:
    data = hashlib.sha256(key.encode()).digest() * (size // 32 + 1)
    data = data[:size]
    path = Path(shelf.store("local").location.removeprefix("file://")) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = ((at or datetime.now(UTC)) - timedelta(days=age_days)).timestamp()
    os.utime(path, (stamp, stamp))
    return data


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("oldest", ["old", "mid"]),
        ("largest", ["big"]),
        ("least-recently-used", ["mid", "new"]),
    ],
)
def test_order_decides_what_moves(tmp_path: Path, order: str, expected: list[str]) -> None:
    shelf = two_tier_shelf(tmp_path, None, order=order)
    put_aged(shelf, "old", 150, 30)
    put_aged(shelf, "mid", 150, 20)
    put_aged(shelf, "new", 150, 10)
    put_aged(shelf, "big", 420, 5)  # 870 of 1000 bytes: above 80 %; 170 must go
    shelf.scan()
    if order == "least-recently-used":
        shelf.get("old")  # read now: the most recently used
        shelf.get("big")
    plan = shelf.enforce(dry_run=True).as_json()
    assert [a["key"] for a in plan["actions"]] == expected
    assert all(a["to"] == "cloud" and a["action"] == "migrate" for a in plan["actions"])


def test_ties_are_broken_by_key(tmp_path: Path) -> None:
    shelf = two_tier_shelf(tmp_path, None)
    same = datetime.now(UTC).replace(microsecond=0)
    for key in ["c", "a", "b", "d"]:
        put_aged(shelf, key, 240, 10, at=same)  # same size and age; 960 bytes, 260 must go
    shelf.scan()
    assert [a["key"] for a in shelf.enforce(dry_run=True).as_json()["actions"]] == ["a", "b"]


def test_min_size_and_pins_are_left_alone(tmp_path: Path) -> None:
    shelf = two_tier_shelf(tmp_path, None, min_size="100B")
    put_aged(shelf, "tiny", 50, 90)
    put_aged(shelf, "pinned", 300, 80)
    put_aged(shelf, "movable", 300, 10)
    put_aged(shelf, "movable2", 200, 5)
    shelf.scan()
    shelf.pin("pinned")
    # tiny and pinned are older, but one is under min_size and the other pinned
    assert [a["key"] for a in shelf.enforce(dry_run=True).as_json()["actions"]] == ["movable"]


@pytest.fixture
def app(app_db_url: str) -> Iterator[AppTable]:
    table = AppTable(app_db_url)
    yield table
    table.dispose()


@pytest.mark.parametrize(
    "dst_kind",
    [
        "file",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("azure", marks=pytest.mark.azure),
    ],
)
@pytest.mark.invariant("I1", "I2")
def test_migration_moves_bytes_and_rewrites_rows(
    app: AppTable, dst_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dst = tier_config(dst_kind, request, tmp_path / "cold")
    if dst_kind == "file":
        dst["ref_format"] = "cold/{key}"
    shelf = two_tier_shelf(tmp_path, app, dst)
    originals = {}
    for i in range(8):
        key = f"renders/ä {i}.mp4"
        originals[key] = put_aged(shelf, key, 110, 40 - i)
    app.insert(
        *(f"data/out/{k}" for k in originals),
        "/workspace/out/renders/ä 0.mp4",
        "data/out/renders/ä 7.mp4",
    )
    shelf.scan()
    result = shelf.enforce().as_json()  # 880 of 1000: move until ≤ 700 → 2 objects
    moved = [a["key"] for a in result["actions"]]
    assert moved == ["renders/ä 0.mp4", "renders/ä 1.mp4"]
    assert result["status"] == "ok"
    assert result["moved_bytes"] == {"local->cloud": 220}
    cloud_ref = dst["ref_format"]
    values = app.values()
    for key in moved:
        assert read(shelf, "cloud", key) == originals[key]
        assert not (tmp_path / "local" / key).exists()
        assert cloud_ref.replace("{key}", key) in values
    assert values.count(cloud_ref.replace("{key}", "renders/ä 0.mp4")) == 2  # alias row too
    assert "data/out/renders/ä 7.mp4" in values
    for value in values:
        assert shelf.get(value) == originals[shelf.resolve(value).key]
    assert shelf.enforce().as_json()["actions"] == []  # below the mark now: nothing to do


class FaultyStore:
    """A destination that keeps other bytes than it was sent (fault injection): the client
    hashed what it sent; the store flips a byte, or drops the tail."""

    def __init__(self, inner: Any, fault: str) -> None:
        self._inner = inner
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def put(self, key: str, source: Any, *, overwrite: bool = True, **options: Any) -> Any:
        from shelflife.stores.base import PutResult

        sent = source if isinstance(source, bytes) else b"".join([c async for c in source])
        kept = bytes([sent[0] ^ 0xFF]) + sent[1:] if self._fault == "flip" else sent[:-10]
        result = await self._inner.put(key, kept, overwrite=overwrite, **options)
        digest = "sha256:" + hashlib.sha256(sent).hexdigest()
        return PutResult(key, len(sent), digest, result.etag)


@pytest.mark.invariant("I2")
@pytest.mark.parametrize("fault", ["flip", "truncate"])
def test_a_copy_that_fails_verification_changes_nothing(
    app: AppTable, tmp_path: Path, fault: str
) -> None:
    shelf = two_tier_shelf(tmp_path, app)
    original = put_aged(shelf, "victim.mp4", 900, 10)
    app.insert("data/out/victim.mp4")
    shelf.scan()
    real = shelf.context.store
    shelf.context.store = (  # type: ignore[method-assign]
        lambda tier: FaultyStore(real(tier), fault) if tier == "cloud" else real(tier)
    )
    result = shelf.enforce().as_json()
    shelf.context.store = real  # type: ignore[method-assign]
    assert result["status"] == "partial"
    assert result["actions"] == []
    assert "verification failed" in result["failed"][0]["error"]
    assert read(shelf, "local", "victim.mp4") == original
    assert app.values() == ["data/out/victim.mp4"]
    assert not (tmp_path / "cold" / "victim.mp4").exists()  # no orphan copy left behind


@pytest.mark.invariant("I1", "I2")
def test_a_row_the_application_changes_meanwhile_is_not_clobbered(
    app: AppTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shelf = two_tier_shelf(tmp_path, app)
    put_aged(shelf, "busy.mp4", 900, 10)
    app.insert("data/out/busy.mp4", "data/out/busy.mp4")
    shelf.scan()
    import shelflife.engine.migrate

    def app_edits_a_row(name: str) -> None:
        if name == "journal-repointing":
            with app.engine.begin() as conn:
                first = min(r[0] for r in app.rows())
                conn.execute(
                    app.table.update()
                    .where(app.table.c.id == first)
                    .values(path="data/out/replacement.mp4")
                )

    monkeypatch.setattr(shelflife.engine.migrate, "checkpoint", app_edits_a_row)
    shelf.enforce()
    assert app.values() == ["cold/busy.mp4", "data/out/replacement.mp4"]


@pytest.mark.invariant("I5")
def test_a_second_run_exits_4_and_says_who_holds_the_lock(tmp_path: Path) -> None:
    shelf = two_tier_shelf(tmp_path, None)
    (tmp_path / "shelflife.toml").write_text(
        f"[catalog]\nurl = 'sqlite:///{tmp_path / 'catalog.db'}'\n"
        f"[tiers.local]\nurl = 'file://{tmp_path / 'local'}'\n"
    )
    with RunLock(shelf.catalog, "shelflife enforce (test)", run_id="run-test"):
        with pytest.raises(LockedError, match=r"shelflife enforce \(test\)"):
            shelf.enforce()
        result = subprocess.run(
            [SHELFLIFE, "gc"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 4
        assert "another run holds the catalog's lock" in result.stderr
        assert f"pid {os.getpid()}" in result.stderr
        assert "run run-test" in result.stderr  # the holder: run id, host, since
        assert f"on {socket.gethostname()}" in result.stderr
        assert "since" in result.stderr
    shelf.enforce()  # released


@pytest.mark.invariant("I5")
def test_the_postgresql_catalog_lock_is_exclusive(tmp_path: Path, pg_catalog_url: str) -> None:
    from shelflife.catalog import Catalog

    first, second = Catalog.open(pg_catalog_url), Catalog.open(pg_catalog_url)
    with (
        RunLock(first, "holder"),
        pytest.raises(LockedError, match="holder"),
        RunLock(second, "waiter"),
    ):
        pass
    with RunLock(second, "next"):
        pass
    first.close()
    second.close()


def test_recall_and_fetch_bring_an_object_back(app: AppTable, tmp_path: Path) -> None:
    shelf = two_tier_shelf(tmp_path, app)
    data = put_aged(shelf, "cold.mp4", 900, 30)
    app.insert("data/out/cold.mp4")
    shelf.scan()
    shelf.enforce()
    assert app.values() == ["cold/cold.mp4"]
    path = shelf.fetch("cold/cold.mp4")
    assert path.read_bytes() == data
    assert app.values() == ["data/out/cold.mp4"]
    assert shelf.recall("cold.mp4", to="cloud").tier == "cloud"
    assert app.values() == ["cold/cold.mp4"]


def test_compat_enforce_threshold(tmp_path: Path) -> None:
    from shelflife.compat import StorageManager

    shelf = two_tier_shelf(tmp_path, None)
    put_aged(shelf, "a", 500, 20)
    put_aged(shelf, "b", 400, 10)
    shelf.scan()
    result = StorageManager(shelf).enforce_threshold()
    assert [a["key"] for a in result["actions"]] == ["a"]


def test_compat_apply_retention_policy(tmp_path: Path) -> None:
    from shelflife.compat import StorageManager

    shelf = two_tier_shelf(tmp_path, None)
    shelf.put(b"old", "old.bin", tier="cloud")
    shelf.put(b"new", "new.bin", tier="cloud")
    shelf.put(b"local", "local.bin")
    from shelflife.base.units import utcnow

    stamp = (datetime.now(UTC) - timedelta(days=91)).timestamp()
    for path in (tmp_path / "cold" / "old.bin", tmp_path / "local" / "local.bin"):
        os.utime(path, (stamp, stamp))  # the run scans first: ages come from the store
    shelf.ledger.purge_expired_leases(utcnow() + timedelta(days=1))
    manager = StorageManager(shelf)
    assert manager.RETENTION_DAYS == 90
    result = manager.apply_retention_policy()
    assert [(a["action"], a["tier"], a["key"]) for a in result["actions"]] == [
        ("expire", "cloud", "old.bin")
    ]
    assert result["status"] == "ok"
    assert manager.apply_retention_policy(days=1000)["actions"] == []
    assert shelf.get("local.bin") == b"local"  # the local tier is not the retention's


def test_bare_key_tiers_need_no_rewrite(app: AppTable, tmp_path: Path) -> None:
    tiers = {
        "local": {"create": True, "url": f"file://{tmp_path / 'local'}", "capacity": "1000B"},
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}"},
    }
    rule = {
        "id": "spill",
        "tier": "local",
        "action": "migrate",
        "to": "cloud",
        "when": "over-watermark",
    }
    shelf = make_app_shelf(tmp_path, app, tiers=tiers, rules=[rule])
    data = put_aged(shelf, "clips/a.mp4", 900, 5)
    app.insert("clips/a.mp4")
    shelf.scan()
    assert [a["key"] for a in shelf.enforce().as_json()["actions"]] == ["clips/a.mp4"]
    assert app.values() == ["clips/a.mp4"]  # unchanged: the key is the same on both tiers
    assert shelf.resolve("clips/a.mp4").tier == "cloud"
    assert shelf.get("clips/a.mp4") == data


@pytest.mark.invariant("I4")
def test_enforce_dry_run_changes_no_store_and_no_row(app: AppTable, tmp_path: Path) -> None:
    shelf = two_tier_shelf(tmp_path, app)
    for i in range(4):
        put_aged(shelf, f"d{i}", 240, 10 + i)
    app.insert(*(f"data/out/d{i}" for i in range(4)))
    shelf.scan()

    def files() -> dict[str, bytes]:
        return {
            str(p.relative_to(tmp_path)): p.read_bytes()
            for p in tmp_path.rglob("*")
            if p.is_file() and "catalog" not in p.name and p.suffix != ".db"
        }

    before_files, before_rows = files(), app.rows()
    plan = shelf.enforce(dry_run=True).as_json()
    assert len(plan["actions"]) == 2
    assert files() == before_files
    assert app.rows() == before_rows
