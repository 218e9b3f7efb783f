"""Orphan collection never deletes a referenced, pinned or in-flight object (DESIGN I1, I3,
I4, I6), on SQLite, PostgreSQL and MariaDB application databases."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shelflife import Shelf
from shelflife.base.units import utcnow
from shelflife.errors import RefusedError, UsageError
from tests.support.apps import AppTable, make_app_shelf, orphan_rule
from tests.support.figures import Figures
from tests.support.servers import tier_config

REF = "data/storage/outputs/{}"


@pytest.fixture
def app(app_db_url: str) -> Iterator[AppTable]:
    table = AppTable(app_db_url)
    yield table
    table.dispose()


def write(shelf: Shelf, *keys: str, tier: str = "local", data: bytes = b"payload") -> None:
    """Write objects the way an application does: straight to the store, no lease."""
    store = shelf.store(tier)

    async def go() -> None:
        await asyncio.gather(*(store.put(key, data + key.encode()) for key in keys))

    asyncio.run(go())


def keys_on(shelf: Shelf, tier: str = "local") -> set[str]:
    return {info.key for name, info in shelf.ls(tier=tier) if not info.key.startswith(".shelflife")}


def fingerprint(shelf: Shelf) -> dict[str, str]:
    """Every object of every tier with the SHA-256 of its bytes."""
    result = {}
    for tier, info in shelf.ls():
        result[f"{tier}:{info.key}"] = hashlib.sha256(_read(shelf, tier, info.key)).hexdigest()
    return result


def _read(shelf: Shelf, tier: str, key: str) -> bytes:
    store = shelf.store(tier)

    async def go() -> bytes:
        return b"".join([chunk async for chunk in store.get(key)])

    return asyncio.run(go())


@pytest.mark.invariant("I1", "I3")
def test_collects_only_what_no_row_points_at(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    write(shelf, "kept/a.mp4", "kept/b.mp4", "shared.mp4", "orphan/c.mp4", "orphan/d.mp4")
    app.insert(
        REF.format("kept/a.mp4"),
        "/workspace/outputs/kept/b.mp4",
        REF.format("shared.mp4"),
        REF.format("shared.mp4"),
    )
    shelf.scan()
    outcome = shelf.gc()
    assert sorted(a.key for a in outcome.actions) == ["orphan/c.mp4", "orphan/d.mp4"]
    assert keys_on(shelf) == {"kept/a.mp4", "kept/b.mp4", "shared.mp4"}
    assert outcome.status == "ok"


def test_a_shared_object_stays_until_its_last_row_goes(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    write(shelf, "shared.mp4")
    app.insert(REF.format("anchor"))  # keeps the source non-empty at the end
    app.insert(REF.format("shared.mp4"), REF.format("shared.mp4"))
    app.insert(REF.format("other.mp4"))
    write(shelf, "other.mp4")
    shelf.scan()
    app.delete(REF.format("other.mp4"))
    with app.engine.begin() as conn:  # delete one of the two rows sharing the object
        conn.exec_driver_sql(
            f"DELETE FROM {app.name} WHERE id = (SELECT MIN(id) FROM "
            f"(SELECT id FROM {app.name} WHERE path = '{REF.format('shared.mp4')}') AS t)"
        )
    assert app.values() == [REF.format("anchor"), REF.format("shared.mp4")]
    shelf.scan()
    outcome = shelf.gc()
    assert [a.key for a in outcome.actions] == ["other.mp4"]
    assert keys_on(shelf) == {"shared.mp4"}
    app.delete(REF.format("shared.mp4"))
    assert [a.key for a in shelf.gc().actions] == ["shared.mp4"]


def test_an_uncommitted_delete_protects_and_a_rollback_changes_nothing(
    app: AppTable, tmp_path: Path
) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    write(shelf, "in-tx.mp4", "rolled-back-insert.mp4")
    app.insert(REF.format("in-tx.mp4"))
    shelf.scan()
    with app.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(app.table.delete().where(app.table.c.path == REF.format("in-tx.mp4")))
        conn.execute(app.table.insert().values(path=REF.format("rolled-back-insert.mp4")))
        if app.engine.dialect.name == "sqlite":
            transaction.rollback()  # SQLite allows one writer: settle before gc reads
            outcome = shelf.gc()
        else:
            outcome = shelf.gc()  # runs while the transaction is open
            transaction.rollback()
    assert [a.key for a in outcome.actions] == ["rolled-back-insert.mp4"]
    assert keys_on(shelf) == {"in-tx.mp4"}
    assert app.values() == [REF.format("in-tx.mp4")]


@pytest.mark.invariant("I1", "I3")
def test_a_row_inserted_after_the_mark_saves_its_object(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    write(shelf, "late.mp4", "gone.mp4")
    app.insert(REF.format("placeholder.mp4"))
    shelf.scan()
    plan = shelf.gc(dry_run=True).plan
    assert sorted(a.key for a in plan.iter_actions()) == ["gone.mp4", "late.mp4"]
    app.insert("/workspace/outputs/late.mp4")  # the application claims it after the plan
    swept = shelf.apply(plan.id, command="gc")  # gc --mark PLAN_ID
    assert [a.key for a in swept.actions] == ["gone.mp4"]
    assert [(s.key, s.reason) for s in swept.skipped] == [("late.mp4", "referenced at sweep time")]
    assert keys_on(shelf) == {"late.mp4"}
    with pytest.raises(UsageError, match="already applied"):
        shelf.apply(plan.id, command="gc")


@pytest.mark.invariant("I3")
def test_grace_pins_and_leases_protect(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule(grace="1h")])
    write(shelf, "young.mp4", "pinned.mp4", "pin-expired.mp4", "old.mp4")
    app.insert(REF.format("anything.mp4"))
    shelf.scan()
    later = utcnow() + timedelta(hours=2)
    shelf.pin("pinned.mp4")
    shelf.pin("pin-expired.mp4", until=utcnow() + timedelta(hours=1))
    shelf.put(b"via shelflife", "leased.mp4")  # holds an upload lease for 1h
    plan = shelf.gc(dry_run=True, at=later).plan
    # By then the 1h upload lease has ended too; the unbounded pin still holds.
    assert sorted(a.key for a in plan.iter_actions()) == [
        "leased.mp4",
        "old.mp4",
        "pin-expired.mp4",
        "young.mp4",
    ]
    now_plan = shelf.gc(dry_run=True).plan
    assert list(now_plan.iter_actions()) == []  # nothing is older than the 1h grace yet
    with pytest.raises(UsageError, match="dry runs only"):
        shelf.gc(at=later)


def test_an_upload_lease_protects_a_new_object_without_grace(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    app.insert(REF.format("anything.mp4"))
    shelf.put(b"mine", "leased.mp4")
    write(shelf, "unleased.mp4")
    shelf.scan()
    assert [a.key for a in shelf.gc().actions] == ["unleased.mp4"]
    assert keys_on(shelf) == {"leased.mp4"}


@pytest.mark.invariant("I4")
def test_dry_run_changes_no_store_and_no_application_database(
    app: AppTable, tmp_path: Path
) -> None:
    shelf = make_app_shelf(
        tmp_path, app, rules=[orphan_rule(), orphan_rule(id="q", mode="quarantine")]
    )
    write(shelf, *(f"o/{i}.bin" for i in range(20)), "ref.bin")
    app.insert(REF.format("ref.bin"))
    shelf.scan()
    before_store, before_rows = fingerprint(shelf), app.rows()
    plan = shelf.gc(dry_run=True).plan
    assert len(list(plan.iter_actions())) == 20
    assert fingerprint(shelf) == before_store
    assert app.rows() == before_rows


@pytest.mark.invariant("I3")
def test_refusals_delete_nothing(app: AppTable, tmp_path: Path) -> None:
    write_shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule(max_fraction=0.5)])
    write(write_shelf, "a", "b", "c", "d")
    write_shelf.scan()
    with pytest.raises(RefusedError, match="is empty while tier local holds 4"):
        write_shelf.gc()
    app.insert(REF.format("a"))
    refused = write_shelf.gc()  # 3 of 4 objects would go: the rule is refused on the tier
    assert refused.status == "refused"
    assert refused.exit_code == 3
    assert "above its max_fraction of 50%" in refused.refusals[0].reason
    assert refused.actions == []
    no_sources = make_app_shelf(tmp_path / "none", None, rules=[orphan_rule()])
    write(no_sources, "x")
    no_sources.scan()
    with pytest.raises(RefusedError, match="no reference source is declared"):
        no_sources.gc()
    app.dispose()
    broken = make_app_shelf(tmp_path / "broken", app, rules=[orphan_rule()])
    with broken.databases.engine("app").begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {app.name}")
    write(broken, "y")
    broken.scan()
    with pytest.raises(RefusedError, match="cannot read references"):
        broken.gc()
    assert keys_on(write_shelf) == {"a", "b", "c", "d"}
    assert keys_on(no_sources) == {"x"}
    assert keys_on(broken) == {"y"}


@pytest.mark.invariant("I6")
def test_quarantine_restore_and_expiry(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule(mode="quarantine", quarantine_days=0)])
    write(shelf, "q/one.mp4", "q/two.mp4")
    app.insert(REF.format("kept.mp4"))
    write(shelf, "kept.mp4")
    shelf.scan()
    original = _read(shelf, "local", "q/one.mp4")
    outcome = shelf.gc()
    assert sorted((a.action, a.key) for a in outcome.actions) == [
        ("quarantine", "q/one.mp4"),
        ("quarantine", "q/two.mp4"),
    ]
    assert keys_on(shelf) == {"kept.mp4"}
    stats = shelf.stats()["tiers"]["local"]
    assert stats["quarantined_objects"] == 2
    restored = shelf.restore("q/one.mp4")
    assert restored.key == "q/one.mp4"
    assert _read(shelf, "local", "q/one.mp4") == original
    with pytest.raises(UsageError, match="not in quarantine"):
        shelf.restore("q/one.mp4")
    app.insert(REF.format("q/one.mp4"))
    purged = shelf.gc()  # quarantine_days = 0: what is left in quarantine is purged now
    assert [(a.action, a.key) for a in purged.actions] == [("purge-quarantine", "q/two.mp4")]
    assert not any(info.key.startswith(".shelflife-trash") for _, info in shelf.ls())
    with pytest.raises(UsageError, match="not in quarantine"):
        shelf.restore("q/two.mp4")


@pytest.mark.invariant("I6")
def test_restore_never_overwrites_a_newer_object(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule(mode="quarantine")])
    write(shelf, "re.mp4", data=b"old")
    app.insert(REF.format("x"))
    shelf.scan()
    shelf.gc()
    write(shelf, "re.mp4", data=b"new")
    with pytest.raises(UsageError, match="already exists"):
        shelf.restore("re.mp4")
    assert _read(shelf, "local", "re.mp4") == b"newre.mp4"


def test_stats_count_referenced_and_orphaned_objects(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    write(shelf, *(f"r{i}" for i in range(7)), *(f"o{i}" for i in range(3)))
    app.insert(*(REF.format(f"r{i}") for i in range(7)))
    shelf.scan()
    assert shelf.stats()["tiers"]["local"]["orphan_objects"] is None  # no snapshot yet
    shelf.refresh_references()
    stats = shelf.stats()
    local = stats["tiers"]["local"]
    assert (local["referenced_objects"], local["orphan_objects"]) == (7, 3)
    assert local["orphan_bytes"] == sum(len(b"payload" + f"o{i}".encode()) for i in range(3))
    assert stats["health"]["status"] == "critical"  # 30 % orphaned > 25 %


def test_release_deletes_only_when_no_reference_remains(app: AppTable, tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, app)
    write(shelf, "s.mp4")
    app.insert(REF.format("s.mp4"), "/workspace/outputs/s.mp4")
    app.delete(REF.format("s.mp4"))
    assert shelf.release(REF.format("s.mp4")) is False  # the alias row still points at it
    app.delete("/workspace/outputs/s.mp4")
    shelf.pin("s.mp4")
    assert shelf.release("s.mp4") is False
    shelf.unpin("s.mp4")
    assert shelf.release("s.mp4") is True
    assert keys_on(shelf) == set()


def test_audit_finds_and_repairs_dangling_rows(app: AppTable, tmp_path: Path) -> None:
    tiers = {
        "local": {
            "create": True,
            "url": f"file://{tmp_path / 'out'}",
            "ref_format": "data/storage/outputs/{key}",
        },
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    shelf = make_app_shelf(tmp_path, app, tiers=tiers)
    write(shelf, "moved.mp4", tier="cloud")
    write(shelf, "fine.mp4")
    app.insert(
        REF.format("moved.mp4"), REF.format("lost.mp4"), REF.format("fine.mp4"), "unparseable://x"
    )
    shelf.scan()
    report = shelf.audit()
    dangling = {d.key: d.found_on for d in report.dangling}
    assert dangling == {"moved.mp4": "cloud", "lost.mp4": None}
    assert report.unmatched == 1
    repaired = shelf.audit(repair=True)
    assert sum(d.repaired for d in repaired.dangling) == 1
    assert "cold/moved.mp4" in app.values()
    assert REF.format("lost.mp4") in app.values()


@pytest.mark.invariant("I1", "I3")
@pytest.mark.parametrize("kind", ["memory", "file", pytest.param("s3", marks=pytest.mark.s3)])
def test_keys_that_break_naive_ordering_survive_when_referenced(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    app = AppTable(str(request.getfixturevalue("pg_url")))
    tier = tier_config(kind, request, tmp_path / "tier")
    tier["ref_format"] = "media/{key}"
    shelf = make_app_shelf(tmp_path, app, tiers={"media": tier}, rules=[orphan_rule()])
    # Byte order: ' ' < '-' < '.' < '/' < '0' < 'A' < 'Z' < 'a' < '~' < 'ä' < '😀'; a
    # collation-aware or directory-walk order differs. (No key is both a file and a folder,
    # which a local filesystem cannot hold.)
    keys = [
        "a/b",
        "a-c",
        "a.b",
        "a b",
        "A/B",
        "Zeta",
        "zeta",
        "ä/x",
        "äb",
        "😀/x",
        "😀b",
        "deep/x/y/z/w/v",
        "a/c",
        "a0",
        "a~",
        "ab",
    ]
    write(shelf, *keys, tier="media")
    referenced = keys[::2]
    app.insert(*(f"media/{k}" for k in referenced))
    shelf.scan()
    outcome = shelf.gc()
    assert sorted(a.key for a in outcome.actions) == sorted(keys[1::2])
    assert keys_on(shelf, "media") == set(referenced)
    app.dispose()


@pytest.mark.invariant("I1", "I3")
def test_uploads_racing_a_sweep_are_never_deleted(
    tmp_path: Path, pg_url: str, figures: Figures
) -> None:
    """600 uploads (half referenced) while collections sweep: none is deleted."""
    app = AppTable(pg_url)
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule(batch_size=50)])
    orphans = [f"orphan/{i:04d}" for i in range(400)]
    write(shelf, *orphans)
    app.insert(REF.format("anchor"))
    shelf.scan()
    uploaded: list[str] = []
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            for i in range(600):
                key = f"new/{i:04d}"
                shelf.put(b"fresh", key)  # leased while written and for upload_lease after
                if i % 2 == 0:
                    app.insert(REF.format(key))
                uploaded.append(key)
        except BaseException as exc:
            errors.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    outcomes = []
    while uploader.is_alive():
        outcomes.append(shelf.gc())
        shelf.scan()
    uploader.join()
    outcomes.append(shelf.gc())
    assert not errors
    assert len(uploaded) == 600
    present = keys_on(shelf)
    assert set(uploaded) <= present
    collected = {a.key for outcome in outcomes for a in outcome.actions}
    assert collected == set(orphans)
    app.dispose()
    figures.add("uploads racing collection", uploads=600, sweeps=len(outcomes), lost=0)


def test_a_tier_whose_rows_hold_bare_keys(app: AppTable, tmp_path: Path) -> None:
    tiers = {
        "media": {"create": True, "url": f"file://{tmp_path / 'media'}", "ref_format": "{key}"}
    }
    shelf = make_app_shelf(tmp_path, app, tiers=tiers, rules=[orphan_rule()])
    write(shelf, "videos/1.mp4", "videos/2.mp4", tier="media")
    app.insert("videos/1.mp4")
    shelf.scan()
    assert [a.key for a in shelf.gc().actions] == ["videos/2.mp4"]
    assert keys_on(shelf, "media") == {"videos/1.mp4"}


@pytest.mark.invariant("I7")
def test_hostile_values_in_reference_columns_are_reported_not_followed(
    app: AppTable, tmp_path: Path
) -> None:
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    write(shelf, "real.mp4", "orphan.mp4")
    app.insert(
        REF.format("real.mp4"),
        REF.format("../../etc/passwd"),
        REF.format("a//b"),
        "/etc/shadow",
        REF.format("x\nz"),
    )
    shelf.scan()
    # 4 of 5 values name no object: the source cannot be trusted to protect anything.
    refused = shelf.gc()
    assert refused.status == "refused"
    assert refused.actions == []
    assert re.search(r"4 of 5 values .* match no tier's spelling", refused.refusals[0].reason)
    assert keys_on(shelf) == {"real.mp4", "orphan.mp4"}
    # Told that such values name no object, collection goes on and never follows them.
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()], reference={"max_unmatched": "90%"})
    outcome = shelf.gc()
    assert [a.key for a in outcome.actions] == ["orphan.mp4"]
    assert outcome.plan.unmatched is not None
    assert outcome.plan.unmatched["count"] == 4
    assert keys_on(shelf) == {"real.mp4"}
    report = shelf.audit()
    assert report.unmatched == 4
    assert report.dangling == []
