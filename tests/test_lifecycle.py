"""plan / apply / run / expire against real application databases and real stores."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.base.units import utcnow
from shelflife.errors import RefusedError, UsageError
from tests.support.apps import AppTable, make_app_shelf, orphan_rule
from tests.support.cli import shelflife, write_config
from tests.support.objects import REF, no_leases, stored


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> AppTable:
    if request.param == "sqlite":
        return AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    return AppTable(str(request.getfixturevalue("pg_url")))


EXPIRE = {"id": "retention", "tier": "local", "action": "expire", "after": "30d"}
RETENTION_RULE = """
[[rules]]
id = "retention"
tier = "local"
action = "expire"
after = "30d"
"""


def shelf_with(tmp_path: Path, app: AppTable, *rules: dict[str, Any], **extra: Any) -> Shelf:
    return make_app_shelf(tmp_path, app, rules=list(rules), **extra)


@pytest.mark.parametrize("on_expire", ["null", "delete-row", "block"])
def test_expire_applies_on_expire_to_rows(tmp_path: Path, app: AppTable, on_expire: str) -> None:
    shelf = shelf_with(tmp_path, app, EXPIRE, on_expire=on_expire)
    stored(shelf, "old.bin", "old-free.bin", days=40)
    stored(shelf, "young.bin", days=1)
    app.insert(REF.format("old.bin"), REF.format("young.bin"), REF.format("unrelated/value"))

    outcome = shelf.run(command="expire")

    store = shelf.store("local")
    assert outcome.status == "ok"
    assert run_sync_exists(store, "young.bin")
    assert not run_sync_exists(store, "old-free.bin")  # no row: expires whatever on_expire
    if on_expire == "block":
        assert run_sync_exists(store, "old.bin")
        assert [s.key for s in outcome.skipped] == ["old.bin"]
        assert "block" in outcome.skipped[0].reason
        assert REF.format("old.bin") in app.values()
    else:
        assert not run_sync_exists(store, "old.bin")
        values = [row[1] for row in app.rows()]
        if on_expire == "null":
            assert values == [None, REF.format("young.bin"), REF.format("unrelated/value")]
        else:
            assert values == [REF.format("young.bin"), REF.format("unrelated/value")]
        assert sum(outcome.rows.values()) == 1
    expired = sorted(a.key for a in outcome.actions)
    assert expired == (["old-free.bin"] if on_expire == "block" else ["old-free.bin", "old.bin"])


def run_sync_exists(store: Any, key: str) -> bool:
    from shelflife.base.aio import run_sync

    return bool(run_sync(store.exists(key)))


@pytest.mark.invariant("I1", "I3")
def test_apply_rechecks_every_action(tmp_path: Path, app: AppTable) -> None:
    """Changed, re-referenced and pinned between plan and apply: each is skipped."""
    shelf = shelf_with(tmp_path, app, EXPIRE, orphan_rule(), on_expire="null")
    stored(shelf, "changed.bin", "pinned.bin", "plain.bin", days=40)
    stored(shelf, "orphan-a.bin", "orphan-b.bin", days=2)
    app.insert(REF.format("changed.bin"), REF.format("pinned.bin"), REF.format("plain.bin"))
    plan = shelf.plan()
    assert sorted((a.action, a.key) for a in plan.actions) == [
        ("delete-orphan", "orphan-a.bin"),
        ("delete-orphan", "orphan-b.bin"),
        ("expire", "changed.bin"),
        ("expire", "pinned.bin"),
        ("expire", "plain.bin"),
    ]
    (tmp_path / "outputs" / "changed.bin").write_bytes(b"new content, other size")
    shelf.pin("pinned.bin")
    app.insert(REF.format("orphan-b.bin"))  # the application uses it after all

    outcome = shelf.apply(plan.as_json())

    done = sorted((a.action, a.key) for a in outcome.actions)
    assert done == [("delete-orphan", "orphan-a.bin"), ("expire", "plain.bin")]
    reasons = {s.key: s.reason for s in outcome.skipped}
    assert reasons["changed.bin"] == "changed since it was planned"
    assert reasons["pinned.bin"] == "pinned or leased"
    assert reasons["orphan-b.bin"] == "referenced at sweep time"
    store = shelf.store("local")
    for key in ("changed.bin", "pinned.bin", "orphan-b.bin"):
        assert run_sync_exists(store, key)
    assert REF.format("changed.bin") in app.values()
    assert REF.format("pinned.bin") in app.values()
    assert REF.format("plain.bin") not in app.values()


@pytest.mark.invariant("I7")
def test_a_plan_applies_once(tmp_path: Path, app: AppTable) -> None:
    shelf = shelf_with(tmp_path, app, EXPIRE)
    app.insert(REF.format("unrelated/value"))  # an empty source would refuse (tested elsewhere)
    stored(shelf, "a.bin", days=40)
    plan = shelf.plan()
    first = shelf.apply(plan.as_json())
    assert [a.key for a in first.actions] == ["a.bin"]
    with pytest.raises(UsageError, match="already applied"):
        shelf.apply(plan.as_json())
    history = shelf.runs()
    assert history[0].plan_id == plan.id
    assert history[0].totals == {"expire": {"objects": 1, "bytes": 50}}


def test_a_future_plan_is_for_review_only(tmp_path: Path, app: AppTable) -> None:
    shelf = shelf_with(tmp_path, app, EXPIRE)
    app.insert(REF.format("unrelated/value"))
    stored(shelf, "a.bin", days=20)
    assert shelf.plan().actions == []
    later = shelf.plan(at=utcnow() + timedelta(days=11))  # "what happens in 11 days"
    assert [a.key for a in later.actions] == ["a.bin"]
    with pytest.raises(UsageError, match="in the future"):
        shelf.apply(later.as_json())
    assert run_sync_exists(shelf.store("local"), "a.bin")


def test_deletions_over_the_caps_need_yes(tmp_path: Path, app: AppTable) -> None:
    shelf = shelf_with(tmp_path, app, EXPIRE, executor={"max_delete": 2})
    app.insert(REF.format("unrelated/value"))
    stored(shelf, "a.bin", "b.bin", "c.bin", days=40)
    with pytest.raises(RefusedError, match="max_delete = 2"):
        shelf.run()
    assert all(run_sync_exists(shelf.store("local"), k) for k in ("a.bin", "b.bin", "c.bin"))
    assert shelf.runs()[0].status == "refused"
    outcome = shelf.run(yes=True)
    assert sorted(a.key for a in outcome.actions) == ["a.bin", "b.bin", "c.bin"]

    shelf = shelf_with(tmp_path, app, EXPIRE, executor={"max_delete_bytes": "40B"})
    stored(shelf, "d.bin", days=40)  # 50 bytes
    with pytest.raises(RefusedError, match="max_delete_bytes"):
        shelf.run()


def test_a_run_stops_itself_when_too_many_actions_fail(tmp_path: Path, app: AppTable) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cloud tier's folder should be")
    tiers = {
        "local": {
            "url": f"file://{tmp_path / 'outputs'}",
            "create": True,
            "ref_format": "data/storage/outputs/{key}",
        },
        "cloud": {"create": True, "url": f"file://{blocked}/cold", "ref_format": "cold/{key}"},
    }
    migrate = {"id": "cold", "tier": "local", "action": "migrate", "to": "cloud", "after": "1d"}
    shelf = make_app_shelf(
        tmp_path,
        app,
        tiers=tiers,
        rules=[migrate],
        executor={"batch_size": 2, "max_error_fraction": 0.25},
    )
    stored(shelf, *(f"f{i}.bin" for i in range(6)), days=5)
    app.insert(*(REF.format(f"f{i}.bin") for i in range(6)))

    outcome = shelf.run()

    assert outcome.status == "partial"
    assert outcome.exit_code == 1
    failed = [f for f in outcome.failed if f.rule != "scan"]  # the cloud tier's listing too
    assert len(failed) == 2  # the first batch; the other four were not attempted
    assert outcome.stopped is not None
    assert "4 actions not attempted" in outcome.stopped
    assert sorted(app.values()) == sorted(REF.format(f"f{i}.bin") for i in range(6))
    record = shelf.runs()[0]
    assert (record.status, record.failed_count) == ("partial", 3)  # and the listing


def test_second_run_does_nothing(tmp_path: Path, app: AppTable) -> None:
    tiers = {
        "local": {
            "url": f"file://{tmp_path / 'outputs'}",
            "create": True,
            "ref_format": "data/storage/outputs/{key}",
            "capacity": "1000B",
        },
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    rules = [  # deleting first: what they remove counts as freed for the watermark
        EXPIRE,
        orphan_rule(),
        {"id": "wm", "tier": "local", "action": "migrate", "to": "cloud", "when": "over-watermark"},
        {**EXPIRE, "id": "cloud-retention", "tier": "cloud"},
    ]
    shelf = make_app_shelf(tmp_path, app, tiers=tiers, rules=rules, on_expire="null")
    for i in range(9):
        shelf.put(b"x" * 100, f"f{i}.bin")
    stored(shelf, "expired.bin", days=60)
    stored(shelf, "orphan.bin", days=1)
    app.insert(*(REF.format(f"f{i}.bin") for i in range(9)), REF.format("expired.bin"))
    no_leases(shelf)

    first = shelf.run()
    second = shelf.run()

    assert first.status == "ok"
    kinds = {a.action for a in first.actions}
    assert kinds == {"migrate", "expire", "delete-orphan"}
    assert second.actions == []
    assert second.plan.actions == []
    assert second.status == "ok"
    assert shelf.usage()[0].used_bytes <= 700
    # every row still resolves to the bytes it named
    values = [row[1] for row in app.rows()]
    assert values.count(None) == 1  # the expired object's row, set to NULL
    for value in values:
        if value is not None:
            assert shelf.get(value) == b"x" * 100


def test_cli_plan_apply_run_and_runs(tmp_path: Path) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    write_config(tmp_path, app, rules=RETENTION_RULE, on_expire="null")
    old = tmp_path / "outputs" / "old.mp4"
    old.write_bytes(b"old")
    stamp = (utcnow() - timedelta(days=40)).timestamp()
    os.utime(old, (stamp, stamp))
    (tmp_path / "outputs" / "new.mp4").write_bytes(b"new")
    app.insert("data/storage/outputs/old.mp4")
    assert shelflife("scan", cwd=tmp_path).returncode == 0

    planned = shelflife("plan", "--json", "-o", "plan.json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    body = json.loads(planned.stdout)
    assert [(a["action"], a["key"]) for a in body["actions"]] == [("expire", "old.mp4")]
    assert body["totals"] == {"expire": {"objects": 1, "bytes": 3}}
    assert json.loads((tmp_path / "plan.json").read_text())["plan_id"] == body["plan_id"]
    table = shelflife("plan", "--at", (utcnow() + timedelta(days=31)).isoformat(), cwd=tmp_path)
    assert "retention" in table.stdout
    assert "2" in table.stdout

    applied = shelflife("apply", "plan.json", "--json", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    run_body = json.loads(applied.stdout)
    assert run_body["status"] == "ok"
    assert run_body["rows"] == {f"app.{app.name}.path": 1}
    assert not old.exists()
    assert app.rows()[0][1] is None

    again = shelflife("apply", "plan.json", cwd=tmp_path)
    assert again.returncode == 2
    assert "already applied" in again.stderr

    dry = shelflife("run", "--dry-run", "--json", cwd=tmp_path)
    assert json.loads(dry.stdout)["actions"] == []
    history = json.loads(shelflife("runs", "--json", cwd=tmp_path).stdout)["runs"]
    assert [(r["command"], r["status"], r["trigger"]) for r in history] == [("apply", "ok", "cli")]
    assert history[0]["totals"] == {"expire": {"objects": 1, "bytes": 3}}
    assert "apply" in shelflife("runs", cwd=tmp_path).stdout

    unknown = shelflife("run", "--rule", "nope", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no enabled rule" in unknown.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad = shelflife("apply", "broken.json", cwd=tmp_path)
    assert bad.returncode == 2
    assert "not a plan file" in bad.stderr


def test_gc_and_enforce_are_recorded_in_the_history(tmp_path: Path, app: AppTable) -> None:
    tiers = {
        "local": {
            "create": True,
            "url": f"file://{tmp_path / 'outputs'}",
            "ref_format": REF.format("{key}"),
        },
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    migrate = {"id": "cold", "tier": "local", "action": "migrate", "to": "cloud", "after": "1d"}
    shelf = make_app_shelf(tmp_path, app, tiers=tiers, rules=[migrate, orphan_rule()])
    stored(shelf, "kept.bin", "orphan.bin", days=3)
    app.insert(REF.format("kept.bin"))

    gc = shelf.gc()
    enforce = shelf.enforce()
    shelf.gc(dry_run=True)  # dry runs are not runs

    history = shelf.runs()
    assert [r.command for r in history] == ["enforce", "gc"]
    assert history[0].id == enforce.as_json()["run_id"]
    assert history[0].totals == {"migrate": {"objects": 1, "bytes": 80}}
    assert history[1].id == gc.as_json()["run_id"]
    assert history[1].totals == {"delete-orphan": {"objects": 1, "bytes": 100}}
    assert all(r.status == "ok" and r.finished_at is not None for r in history)

    with app.engine.begin() as conn:
        conn.execute(app.table.delete())
    stored(shelf, "lonely.bin", days=3)
    with pytest.raises(RefusedError):
        shelf.gc()  # an empty source refuses, and the refusal is on record
    assert shelf.runs()[0].status == "refused"
    assert "empty" in (shelf.runs()[0].error or "")


def test_apply_judges_ages_by_the_inventory_not_the_plan_file(
    tmp_path: Path, app: AppTable
) -> None:
    shelf = shelf_with(tmp_path, app, EXPIRE)
    app.insert(REF.format("unrelated/value"))
    stored(shelf, "old.bin", days=40)
    stored(shelf, "young.bin", days=1)
    body = shelf.plan().as_json()
    forged = {**body["actions"][0], "key": "young.bin", "bytes": 90}
    forged.pop("etag", None)
    body["actions"].append(forged)  # an edited plan file claims young.bin is old

    outcome = shelf.apply(body)

    assert [a.key for a in outcome.actions] == ["old.bin"]
    assert {s.key: s.reason for s in outcome.skipped} == {
        "young.bin": "its rule no longer selects it"
    }
    assert run_sync_exists(shelf.store("local"), "young.bin")


@pytest.mark.invariant("I1", "I2")
def test_kill_during_expiration_leaves_no_row_pointing_at_nothing(tmp_path: Path) -> None:
    """kill -9 after the rows were changed, before the object is deleted: the object is
    left unreferenced (never a row without its object); the next run finishes the job and
    records the killed run as interrupted."""
    import subprocess

    from tests.support.cli import SHELFLIFE

    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    write_config(tmp_path, app, rules=RETENTION_RULE, on_expire="delete-row")
    stamp = (utcnow() - timedelta(days=40)).timestamp()
    for name in ("a.bin", "b.bin"):
        path = tmp_path / "outputs" / name
        path.write_bytes(name.encode())
        os.utime(path, (stamp, stamp))
    (tmp_path / "outputs" / "young.bin").write_bytes(b"young")
    app.insert(REF.format("a.bin"), REF.format("b.bin"), REF.format("young.bin"))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    killed = subprocess.run(
        [SHELFLIFE, "run"],
        cwd=tmp_path,
        env={**env, "SHELFLIFE_KILL_AT": "expire-rows:1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9
    assert app.values() == [REF.format("young.bin")]  # the rows went first
    assert (tmp_path / "outputs" / "a.bin").exists()  # and the objects are still there
    for value in app.values():
        assert (tmp_path / "outputs" / value.rsplit("/", 1)[1]).exists()

    finished = shelflife("run", "--json", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert sorted(a["key"] for a in json.loads(finished.stdout)["actions"]) == ["a.bin", "b.bin"]
    assert not (tmp_path / "outputs" / "a.bin").exists()
    history = json.loads(shelflife("runs", "--json", cwd=tmp_path).stdout)["runs"]
    assert [r["status"] for r in history] == ["ok", "failed"]
    assert "interrupted" in history[1]["error"]


@pytest.mark.invariant("I4")
def test_a_dry_run_changes_no_store_and_no_application_row(tmp_path: Path) -> None:
    """DESIGN I4 for the whole lifecycle: stores and application database byte-for-byte."""
    import hashlib

    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    tiers = {
        "local": {
            "url": f"file://{tmp_path / 'outputs'}",
            "create": True,
            "ref_format": REF.format("{key}"),
            "capacity": "150B",
        },
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    rules = [
        EXPIRE,
        orphan_rule(),
        {"id": "wm", "tier": "local", "action": "migrate", "to": "cloud", "when": "over-watermark"},
    ]
    shelf = make_app_shelf(tmp_path, app, tiers=tiers, rules=rules, on_expire="delete-row")
    stored(shelf, "expired.bin", days=40)
    stored(shelf, "orphan.bin", "a.bin", "b.bin", "c.bin", days=2)
    app.insert(*(REF.format(k) for k in ("expired.bin", "a.bin", "b.bin", "c.bin")))

    def fingerprint() -> dict[str, str]:
        found = {}
        for path in sorted(tmp_path.rglob("*")):
            if path.is_file() and path.parent.name in ("outputs", "cold"):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        found["rows"] = repr(app.rows())
        return found

    before = fingerprint()
    outcome = shelf.run(dry_run=True)
    assert {a.action for a in outcome.plan.actions} == {"expire", "delete-orphan", "migrate"}
    assert fingerprint() == before
    assert shelf.runs() == []  # a dry run is no run


@pytest.mark.invariant("I3")
def test_run_refuses_when_a_source_cannot_be_trusted(tmp_path: Path) -> None:
    """DESIGN I3 through ``run``: an empty or unreadable source deletes nothing (exit 3)."""
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    shelf = shelf_with(tmp_path, app, EXPIRE, orphan_rule())
    stored(shelf, "old.bin", "orphan.bin", days=40)
    with pytest.raises(RefusedError, match="is empty"):
        shelf.run()
    app.insert(REF.format("old.bin"))
    with app.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {app.name}")
    with pytest.raises(RefusedError, match="cannot read references"):
        shelf.run()
    for key in ("old.bin", "orphan.bin"):
        assert run_sync_exists(shelf.store("local"), key)
    assert [r.status for r in shelf.runs()] == ["refused", "refused"]


@pytest.mark.invariant("I5")
def test_one_run_at_a_time(tmp_path: Path) -> None:
    """DESIGN I5 through ``run``: a second run while one holds the lock exits 4."""
    from shelflife.catalog.lock import RunLock
    from shelflife.errors import LockedError

    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    shelf = shelf_with(tmp_path, app, EXPIRE)
    with RunLock(shelf.catalog, "another run"), pytest.raises(LockedError) as caught:
        shelf.run()
    assert caught.value.exit_code == 4
    assert shelf.run().status == "ok"  # free again afterwards
