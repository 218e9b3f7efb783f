"""One pipeline (DESIGN I8): a rule means one thing whichever command plans it.

``plan --rule``, the rule's own command (``gc`` / ``enforce`` / ``expire``) with
``--dry-run --rule`` and ``run --dry-run --rule`` must select the same objects and keep the
same ones for the same reasons, for every rule kind and filter field, on a folder and on
the S3 server; the deletion caps hold in every command that deletes; and a tier that was
never scanned is never silently empty.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.cli import run as cli_run
from shelflife.cli.state import state
from shelflife.config import load_config
from tests.support.servers import make_s3_bucket, s3_client, s3_tier


@dataclass(frozen=True)
class Obj:
    key: str
    size: int
    kind: str  # its "kind" tag
    old: bool  # written before the rules' age cutoff


OBJECTS = [
    Obj("renders/a.mp4", 100, "render", True),
    Obj("renders/b.mp4", 300, "render", True),
    Obj("thumbs/a.jpg", 50, "thumb", True),
    Obj("thumbs/b.jpg", 500, "thumb", True),
    Obj("misc/pinned.jpg", 120, "thumb", True),  # pinned: selected, kept
    Obj("refd/block.mp4", 250, "render", True),  # a row names it (on_expire = block)
    Obj("renders/new.mp4", 100, "render", False),
    Obj("thumbs/new.jpg", 210, "thumb", False),
]
PINNED = "misc/pinned.jpg"
REFERENCED = "refd/block.mp4"

KINDS: dict[str, tuple[str, str]] = {  # rule action → (its command, the rule's own lines)
    "migrate": ("enforce", 'to = "cold"\nafter = "2s"'),
    "expire": ("expire", 'after = "2s"'),
    "collect-orphans": ("gc", 'grace = "2s"\nmax_fraction = 1.0'),
}
FILTERS: dict[str, tuple[str, Any]] = {  # field → (its TOML, what it keeps)
    "prefix": ('prefix = "renders/"', lambda o: o.key.startswith("renders/")),
    "suffix": ('suffix = ".jpg"', lambda o: o.key.endswith(".jpg")),
    "tags": ('tags = { kind = "thumb" }', lambda o: o.kind == "thumb"),
    "min_size": ('min_size = "200B"', lambda o: o.size >= 200),
    "max_size": ('max_size = "200B"', lambda o: o.size <= 200),
    "age": ("", lambda o: True),  # the rule's own age alone
}


@dataclass
class World:
    """One store of objects, one catalog (tags and pins live there), one application
    database; every case plans over them with its own rule and changes nothing."""

    root: Path
    local: dict[str, Any]
    reference: str  # the row value naming REFERENCED
    at: datetime  # evaluate here: old objects are past the 2 s age, new ones are not


def _toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(world: World, kind: str, field: str, executor: str = "") -> Path:
    command_lines = KINDS[kind][1]
    local = "\n".join(f"{name} = {_toml_value(value)}" for name, value in world.local.items())
    config = world.root / f"{kind}-{field}.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///{world.root / "catalog.db"}"
[databases.app]
url = "sqlite:///{world.root / "app.db"}"
[tiers.local]
{local}
[tiers.cold]
url = "file://{world.root / "cold"}"
create = true
[[references]]
database = "app"
table = "jobs"
column = "path"
on_expire = "block"
[[rules]]
id = "r"
tier = "local"
action = "{kind}"
{command_lines}
[rules.filter]
{FILTERS[field][0]}
{executor}
""")
    return config


def build_world(root: Path, local: dict[str, Any], reference: str) -> World:
    root.mkdir(parents=True, exist_ok=True)
    world = World(root, local, reference, datetime.now(UTC))
    config = write_config(world, "expire", "age")
    with sqlite3.connect(root / "app.db") as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
        db.execute("INSERT INTO jobs (path) VALUES (?)", (reference,))
    shelf = Shelf.open(load_config(config))
    try:
        for obj in [o for o in OBJECTS if o.old]:
            shelf.put(obj.key.encode().ljust(obj.size, b"."), obj.key, tags={"kind": obj.kind})
        time.sleep(3.0)  # a gap no store's timestamp precision can blur
        world.at = datetime.now(UTC) + timedelta(seconds=0.5)  # cutoff: 1.5 s before now
        time.sleep(0.6)
        for obj in [o for o in OBJECTS if not o.old]:
            shelf.put(obj.key.encode().ljust(obj.size, b"."), obj.key, tags={"kind": obj.kind})
        shelf.pin(PINNED)
        # leases end: only pins and references keep objects in these plans
        shelf.ledger.purge_expired_leases(datetime.now(UTC) + timedelta(days=1))
    finally:
        shelf.close()
    return world


@pytest.fixture(scope="module", params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp(f"world-{request.param}")
    if request.param == "file":
        local = {
            "create": True,
            "url": f"file://{root / 'outputs'}",
            "ref_format": "data/outputs/{key}",
        }
        return build_world(root, local, f"data/outputs/{REFERENCED}")
    endpoint = request.getfixturevalue("s3_endpoint")
    local = s3_tier(endpoint, make_s3_bucket(endpoint))
    return build_world(root, local, str(local["ref_format"]).replace("{key}", REFERENCED))


def shelflife(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """The CLI in this process (the same Typer app the console script runs)."""
    capsys.readouterr()
    try:
        code = cli_run(list(argv))
    finally:
        if state.shelf is not None:
            state.shelf.close()
            state.shelf = None
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}


def expected(kind: str, field: str) -> tuple[set[str], set[tuple[str, str]]]:
    """What the rule should select (acted on) and keep (skipped, with why)."""
    keep = FILTERS[field][1]
    chosen = [o for o in OBJECTS if o.old and keep(o)]
    if kind == "collect-orphans":
        chosen = [o for o in chosen if o.key != REFERENCED]  # referenced: not an orphan
    skipped = {(PINNED, "pinned")} if any(o.key == PINNED for o in chosen) else set()
    if kind == "expire" and any(o.key == REFERENCED for o in chosen):
        skipped.add((REFERENCED, "referenced by app.jobs.path (on_expire = block)"))
    acted = {o.key for o in chosen} - {key for key, _ in skipped}
    return acted, skipped


@pytest.mark.invariant("I8")
@pytest.mark.parametrize("field", list(FILTERS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_rule_selects_the_same_objects_in_every_command(
    world: World, kind: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(world, kind, field))
    at = world.at.isoformat()
    command = KINDS[kind][0]
    invocations = {
        "plan": ["plan", "--rule", "r", "--at", at, "--json"],
        command: [command, "--dry-run", "--rule", "r", "--at", at, "--json"],
        "run": ["run", "--dry-run", "--rule", "r", "--at", at, "--json"],
    }
    acted, kept = expected(kind, field)
    assert acted, "every case selects something (else it would prove nothing)"
    assert len(acted) < len(OBJECTS), "and leaves something out"
    for name, argv in invocations.items():
        code, body = shelflife(capsys, "-c", config, *argv)
        assert code == 0, (name, body)
        assert {a["key"] for a in body["actions"]} == acted, name
        assert {(s["key"], s["reason"]) for s in body["skipped"]} == kept, name
        assert all(s["rule"] == "r" and s["tier"] == "local" for s in body["skipped"]), name
        assert body["refusals"] == [], name


# -- caps ---------------------------------------------------------------------------------


@pytest.mark.invariant("I8")
@pytest.mark.parametrize("cap", ["max_delete = 2", "max_delete_bytes = 100"])
@pytest.mark.parametrize(
    ("command", "kind"), [("gc", "collect-orphans"), ("expire", "expire"), ("run", "expire")]
)
def test_the_deletion_caps_hold_in_every_command(
    tmp_path: Path, command: str, kind: str, cap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(
        tmp_path,
        {
            "create": True,
            "url": f"file://{tmp_path / 'outputs'}",
            "ref_format": "data/outputs/{key}",
        },
        "data/outputs/kept.bin",
        datetime.now(UTC) - timedelta(days=1),
    )
    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
        db.execute("INSERT INTO jobs (path) VALUES ('data/outputs/kept.bin')")
    (tmp_path / "outputs").mkdir()
    names = ["kept.bin", "a.bin", "b.bin", "c.bin"]
    for name in names:
        (tmp_path / "outputs" / name).write_bytes(b"x" * 60)
    old = time.time() - 86400 * 3
    for path in (tmp_path / "outputs").iterdir():
        os.utime(path, (old, old))
    config = str(write_config(world, kind, "age", executor=f"[executor]\n{cap}"))
    code, body = shelflife(capsys, "-c", config, command, "--json")
    assert code == 3, body
    assert body["status"] == "refused"
    assert "nothing was done" in body["reason"]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == sorted(names)
    code, body = shelflife(capsys, "-c", config, command, "--yes", "--json")
    assert code == 0, body
    assert {a["key"] for a in body["actions"]} == {"a.bin", "b.bin", "c.bin"}
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["kept.bin"]


# -- scanning -------------------------------------------------------------------------------


@pytest.mark.invariant("I8")
@pytest.mark.s3
def test_gc_dry_run_on_a_never_scanned_bucket_finds_its_orphans(
    tmp_path: Path, s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:

    bucket = make_s3_bucket(s3_endpoint)
    local = s3_tier(s3_endpoint, bucket)
    client = s3_client(s3_endpoint)
    for name in ("kept.bin", "orphan-1.bin", "orphan-2.bin"):  # the application's writes
        client.put_object(Bucket=bucket, Key=f"pre/{name}", Body=b"bytes")
    world = World(tmp_path, local, str(local["ref_format"]).replace("{key}", "kept.bin"), _now())
    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
        db.execute("INSERT INTO jobs (path) VALUES (?)", (world.reference,))
    config = str(write_config(world, "collect-orphans", "age"))
    later = (_now() + timedelta(minutes=1)).isoformat()
    code, body = shelflife(capsys, "-c", config, "gc", "--dry-run", "--no-scan", "--json")
    assert code == 2  # never scanned: an error, not an empty plan
    assert body["error"]["code"] == "bad_request"  # --json: the error as JSON on stdout
    code, body = shelflife(capsys, "-c", config, "gc", "--dry-run", "--at", later, "--json")
    assert code == 0, body
    assert {a["key"] for a in body["actions"]} == {"orphan-1.bin", "orphan-2.bin"}
    assert body["scanned"]["local"] == 3


@pytest.mark.invariant("I8")
@pytest.mark.parametrize("command", ["plan", "run", "gc", "enforce", "expire"])
def test_no_scan_on_a_never_scanned_tier_exits_2_and_a_stale_one_warns(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kind = {"gc": "collect-orphans", "enforce": "migrate"}.get(command, "expire")
    world = World(
        tmp_path,
        {
            "create": True,
            "url": f"file://{tmp_path / 'outputs'}",
            "ref_format": "data/outputs/{key}",
        },
        "data/outputs/kept.bin",
        _now(),
    )
    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
        db.execute("INSERT INTO jobs (path) VALUES (?)", (world.reference,))
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "kept.bin").write_bytes(b"kept")
    config = str(write_config(world, kind, "age", executor='[executor]\nstale_scan = "1s"'))
    dry = [] if command == "plan" else ["--dry-run"]
    code, body = shelflife(capsys, "-c", config, command, *dry, "--no-scan", "--json")
    assert code == 2
    assert body["error"]["code"] == "bad_request"  # --json: the error as JSON on stdout
    code, body = shelflife(capsys, "-c", config, command, *dry, "--json")  # scans first
    assert code == 0
    assert body["warnings"] == []
    time.sleep(1.2)
    code, body = shelflife(capsys, "-c", config, command, *dry, "--no-scan", "--json")
    assert code == 0
    assert len(body["warnings"]) == 1
    assert "last scanned" in body["warnings"][0]


def _now() -> datetime:
    return datetime.now(UTC)


# -- plans kept in the catalog ------------------------------------------------------------


def _expiring_shelf(tmp_path: Path, count: int, **executor: Any) -> Shelf:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    old = time.time() - 86400 * 3
    for index in range(count):
        path = outputs / f"f{index}.bin"
        path.write_bytes(b"x" * 10)
        os.utime(path, (old, old))
    with sqlite3.connect(tmp_path / "app.db") as db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)")
        db.execute("INSERT INTO jobs (path) VALUES ('data/outputs/elsewhere.bin')")
    world = World(
        tmp_path,
        {"create": True, "url": f"file://{outputs}", "ref_format": "data/outputs/{key}"},
        "data/outputs/elsewhere.bin",
        _now(),
    )
    settings = "\n".join(f"{name} = {value}" for name, value in executor.items())
    config = write_config(world, "expire", "age", executor=f"[executor]\n{settings}")
    return Shelf.open(load_config(config))


def test_a_refused_apply_keeps_the_plan_and_a_plan_applies_once(tmp_path: Path) -> None:
    from shelflife.errors import RefusedError, UsageError

    shelf = _expiring_shelf(tmp_path, 5, max_delete=2)
    plan = shelf.expire(dry_run=True).plan
    assert plan.size == 5
    with pytest.raises(RefusedError, match="max_delete = 2"):
        shelf.apply(plan.id)
    assert len(list((tmp_path / "outputs").iterdir())) == 5
    done = shelf.apply(plan.id, yes=True)  # the refusal kept the plan whole
    assert sorted(a.key for a in done.actions) == [f"f{i}.bin" for i in range(5)]
    with pytest.raises(UsageError, match="already applied"):
        shelf.apply(plan.id, yes=True)


def test_gc_mark_takes_no_part_of_a_plan_that_holds_other_actions(tmp_path: Path) -> None:
    from shelflife.errors import UsageError

    shelf = _expiring_shelf(tmp_path, 3)
    plan = shelf.plan()
    with pytest.raises(UsageError, match="also holds expire actions"):
        shelf.gc(mark=plan.id)
    assert len(shelf.apply(plan.id).actions) == 3  # still whole, still open


def test_a_plan_whose_items_were_pruned_is_not_applied_in_part(tmp_path: Path) -> None:
    from shelflife.catalog.plans import KEEP
    from shelflife.errors import UsageError

    shelf = _expiring_shelf(tmp_path, 3)
    first = shelf.plan()
    for _ in range(KEEP):
        shelf.plan(scan=False)
    with pytest.raises(UsageError, match="no longer kept in full"):
        shelf.apply(first.id)
    assert len(list((tmp_path / "outputs").iterdir())) == 3


def test_pruning_spares_the_plan_a_running_run_applies(tmp_path: Path) -> None:
    from shelflife.catalog.history import History
    from shelflife.catalog.plans import KEEP, count

    shelf = _expiring_shelf(tmp_path, 3)
    applying = shelf.plan()
    history = History(shelf.catalog.engine)
    history.start("run-x", command="apply", trigger="test", now=_now())
    assert history.claim_plan(applying.id, "run-x", _now())
    for _ in range(KEEP + 2):  # dry runs meanwhile, from other processes
        shelf.plan(scan=False)
    assert count(shelf.catalog.engine, applying.id) == 3
    history.finish("run-x", status="ok", now=_now())
    shelf.plan(scan=False)
    assert count(shelf.catalog.engine, applying.id) == 0  # pruned once its run ended


def test_a_plan_applied_by_id_keeps_its_refusals(tmp_path: Path) -> None:
    shelf = _expiring_shelf(tmp_path, 4)
    config = tmp_path / "expire-age.toml"
    text = config.read_text().replace('action = "expire"', 'action = "collect-orphans"')
    config.write_text(text.replace('after = "2s"', 'grace = "2s"\nmax_fraction = 0.1'))
    shelf.close()
    shelf = Shelf.open(load_config(config))
    plan = shelf.plan()
    assert [r.rule for r in plan.refusals] == ["r"]  # 4 of 4 orphans: above 10 %
    outcome = shelf.apply(plan.id)
    assert outcome.status == "refused"
    assert outcome.exit_code == 3
    assert outcome.refusals[0].reason == plan.refusals[0].reason
