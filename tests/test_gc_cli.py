"""gc, check, pin and listen as a user runs them: exit codes, JSON shapes, real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.apps import AppTable, wait_for_triggers
from tests.support.cli import SHELFLIFE, shelflife, write_config

ORPHANS = """
[[rules]]
id = "orphans"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 0.5
"""


@pytest.fixture
def app(pg_url: str) -> AppTable:
    return AppTable(pg_url)


def files(tmp_path: Path, *names: str) -> None:
    for name in names:
        path = tmp_path / "outputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def test_gc_dry_run_prints_the_plan_shape_then_sweeps_the_mark(
    tmp_path: Path, app: AppTable
) -> None:
    # One value in three names no object (told so with max_unmatched): reported, not followed.
    write_config(tmp_path, app, rules=ORPHANS, reference="max_unmatched = 0.5")
    files(tmp_path, "keep.mp4", "drop.mp4", "also.mp4", "fine.mp4")
    app.insert("data/storage/outputs/keep.mp4", "data/storage/outputs/fine.mp4", "weird://x")
    assert shelflife("scan", cwd=tmp_path).returncode == 0
    dry = shelflife("gc", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert set(plan) >= {"now", "actions", "skipped", "totals"}
    assert sorted(a["key"] for a in plan["actions"]) == ["also.mp4", "drop.mp4"]
    assert all(set(a) >= {"action", "rule", "tier", "key", "bytes"} for a in plan["actions"])
    assert plan["totals"] == {"delete-orphan": {"objects": 2, "bytes": 16}}
    assert plan["unmatched_references"]["count"] == 1
    assert (tmp_path / "outputs" / "drop.mp4").exists()
    run = shelflife("gc", "--mark", plan["plan_id"], "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["status"] == "ok"
    assert set(result) >= {"run_id", "status", "actions", "totals", "failed"}
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["fine.mp4", "keep.mp4"]


@pytest.mark.invariant("I3")
def test_gc_refusal_exits_3_and_deletes_nothing(tmp_path: Path, app: AppTable) -> None:
    write_config(tmp_path, app, rules=ORPHANS)
    files(tmp_path, "a", "b", "c")
    app.insert("data/storage/outputs/a")
    shelflife("scan", cwd=tmp_path)
    result = shelflife("gc", "--json", cwd=tmp_path)
    assert result.returncode == 3
    assert json.loads(result.stdout)["status"] == "refused"
    assert "max_fraction" in result.stderr
    plain = shelflife("gc", cwd=tmp_path)
    assert plain.returncode == 3
    assert "hint:" in plain.stderr
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["a", "b", "c"]


def test_check_lints_references(tmp_path: Path, pg_url: str) -> None:
    app = AppTable(pg_url, index=False)
    other = AppTable(pg_url)
    other.insert("data/storage/outputs/thumbs/1.jpg")
    write_config(tmp_path, app)
    result = shelflife("check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    declared = checks[f"app.{app.name}.path"]
    assert declared["warning"] is True
    assert "no index" in declared["message"]
    undeclared = checks[f"app.{other.name}.path"]
    assert "undeclared reference column" in undeclared["message"]


def test_pin_protects_from_the_command_line(tmp_path: Path, app: AppTable) -> None:
    write_config(tmp_path, app, rules=ORPHANS.replace("0.5", "1.0"))
    files(tmp_path, "pinned.mp4", "loose.mp4")
    app.insert("data/storage/outputs/anchor")
    shelflife("scan", cwd=tmp_path)
    assert shelflife("pin", "data/storage/outputs/pinned.mp4", cwd=tmp_path).returncode == 0
    assert shelflife("gc", cwd=tmp_path).returncode == 0
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["pinned.mp4"]
    assert shelflife("unpin", "pinned.mp4", cwd=tmp_path).returncode == 0
    assert shelflife("unpin", "pinned.mp4", cwd=tmp_path).returncode == 2


def test_listen_releases_objects_when_their_rows_go(tmp_path: Path, app: AppTable) -> None:
    write_config(tmp_path, app)
    files(tmp_path, "solo.mp4", "shared.mp4", "rolled.mp4")
    app.insert(
        "data/storage/outputs/solo.mp4",
        "data/storage/outputs/shared.mp4",
        "/workspace/outputs/shared.mp4",
        "data/storage/outputs/rolled.mp4",
    )
    shelflife("scan", cwd=tmp_path)
    listener = start_listener(tmp_path)
    try:
        wait_for_triggers(app.engine, app.name)
        with app.engine.connect() as conn:  # a delete that rolls back releases nothing
            transaction = conn.begin()
            conn.execute(app.table.delete().where(app.table.c.path.like("%rolled.mp4")))
            transaction.rollback()
        app.delete("data/storage/outputs/shared.mp4")  # the alias row still points at it
        app.delete("data/storage/outputs/solo.mp4")
        deadline = time.monotonic() + 30
        while (tmp_path / "outputs" / "solo.mp4").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
    finally:
        listener.send_signal(signal.SIGTERM)
        _, stderr = listener.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert not (tmp_path / "outputs" / "solo.mp4").exists()
    assert (tmp_path / "outputs" / "shared.mp4").exists()
    assert (tmp_path / "outputs" / "rolled.mp4").exists()
    assert "1 released" in stderr


def start_listener(cwd: Path) -> subprocess.Popen[str]:
    """``shelflife listen`` in the background, with a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    return subprocess.Popen(
        [SHELFLIFE, "listen"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_per_prefix_rules_use_their_own_grace(tmp_path: Path, app: AppTable) -> None:
    rules = """
[[rules]]
id = "scratch"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 1.0
filter = { prefix = "scratch/" }

[[rules]]
id = "rest"
tier = "local"
action = "collect-orphans"
grace = "30d"
max_fraction = 1.0
"""
    write_config(tmp_path, app, rules=rules)
    files(tmp_path, "scratch/tmp.bin", "renders/new.mp4")
    app.insert("data/storage/outputs/anchor")
    shelflife("scan", cwd=tmp_path)
    plan = json.loads(shelflife("gc", "--dry-run", "--json", cwd=tmp_path).stdout)
    assert [(a["rule"], a["key"]) for a in plan["actions"]] == [("scratch", "scratch/tmp.bin")]
    later = json.loads(
        shelflife("gc", "--dry-run", "--json", "--at", "2099-01-01T00:00:00Z", cwd=tmp_path).stdout
    )
    assert sorted((a["rule"], a["key"]) for a in later["actions"]) == [
        ("rest", "renders/new.mp4"),
        ("scratch", "scratch/tmp.bin"),
    ]


def test_listen_keeps_objects_whose_rows_a_migration_rewrites(
    tmp_path: Path, app: AppTable
) -> None:
    migrate_rule = """
[tiers.cloud]
url = "file://cold"
create = true
ref_format = "cold/{key}"
[[rules]]
id = "age-out"
tier = "local"
action = "migrate"
to = "cloud"
after = "0s"
"""
    write_config(tmp_path, app, extra=migrate_rule)
    files(tmp_path, "moving.mp4", "staying.mp4")
    app.insert("data/storage/outputs/moving.mp4", "/workspace/outputs/staying.mp4")
    shelflife("scan", cwd=tmp_path)
    shelflife("pin", "staying.mp4", cwd=tmp_path)
    listener = start_listener(tmp_path)
    try:
        wait_for_triggers(app.engine, app.name)
        moved = shelflife("enforce", "--json", cwd=tmp_path)
        assert moved.returncode == 0, moved.stderr
        assert [a["key"] for a in json.loads(moved.stdout)["actions"]] == ["moving.mp4"]
        time.sleep(2)  # the trigger fired with the old value; give the listener time to act
    finally:
        listener.send_signal(signal.SIGTERM)
        _, stderr = listener.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert "1 notifications" in stderr  # the rewrite was seen …
    assert "0 released" in stderr  # … and nothing was released for it
    assert (tmp_path / "cold" / "moving.mp4").read_bytes() == b"moving.mp4"
    assert "cold/moving.mp4" in app.values()
