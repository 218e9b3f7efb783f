"""The action log: what a real run did to each object and why, on SQLite and PostgreSQL,
read by ``shelflife log``, ``/api/v1/log`` and JSON lines; pruned by age in bounded
batches, at 10^6 entries."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelflife import Shelf
from shelflife.api.auth import hash_token, new_token
from shelflife.base.units import parse_instant_or_ago, utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.actionlog import ActionLog, LogEntry, LogFilter, append, page_query
from shelflife.catalog.schema import plan_items, to_micros
from shelflife.engine.fanout import RunActions, execute_batch
from shelflife.model.actions import Action
from tests.support.apps import AppTable
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.objects import stored
from tests.support.servers import free_port, wait_for_port

REF = "data/storage/outputs/{}"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("pg_catalog_url"))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppTable]:
    table = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    yield table
    table.dispose()


def write_config(
    tmp_path: Path, app: AppTable, catalog_url: str, extra: str = "", *, broken: bool = True
) -> Path:
    """Two tiers and a third that cannot be written (its folder is under a file), and one
    rule of each kind, each on its own prefix (``broken``: with the third tier and a rule
    moving to it)."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the broken tier's folder should be")
    doomed = f"""
[tiers.broken]
url = "file://{blocked}/cold"
create = true
ref_format = "broken/{{key}}"
[[rules]]
id = "to-broken"
tier = "local"
action = "migrate"
to = "broken"
after = "10d"
filter = {{ prefix = "doomed/" }}
"""
    config = tmp_path / "shelflife.toml"
    config.write_text(
        f"""
[catalog]
url = "{catalog_url}"
[databases.app]
url = "{app.url}"
[tiers.local]
url = "file://{tmp_path / "outputs"}"
create = true
ref_format = "data/storage/outputs/{{key}}"
[tiers.cloud]
url = "file://{tmp_path / "cold"}"
create = true
ref_format = "cold/{{key}}"
[[references]]
database = "app"
table = "{app.name}"
column = "path"
on_expire = "null"
[executor]
max_error_fraction = 1.0
[[rules]]
id = "to-cloud"
tier = "local"
action = "migrate"
to = "cloud"
after = "10d"
filter = {{ prefix = "cold/" }}
[[rules]]
id = "retention"
tier = "local"
action = "expire"
after = "60d"
filter = {{ prefix = "old/" }}
[[rules]]
id = "orphans"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 1.0
filter = {{ prefix = "tmp/" }}
{extra}
"""
        + (doomed if broken else "")
    )
    return config


def log_json(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    result = shelflife("log", *args, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)["entries"]
    return entries


def query(tmp_path: Path, **filters: Any) -> list[dict[str, Any]]:
    """What ``shelflife log --json`` answers, asked in process (the same service calls)."""
    from shelflife.service import actionlog

    with Shelf.open(tmp_path / "shelflife.toml") as shelf:
        key = filters.pop("key", None)
        if key is not None:
            filters["keys"] = tuple(actionlog.keys_named(shelf.context, key))
        for name in ("since", "until"):
            if name in filters:
                filters[name] = parse_instant_or_ago(filters[name], utcnow())
        found = actionlog.find(shelf.context, LogFilter(**filters), newest=True)
        return [item.as_json() for item in found]


def one(entries: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    found = [e for e in entries if all(e[name] == value for name, value in fields.items())]
    assert len(found) == 1, (fields, entries)
    return found[0]


# -- a real run, then "what happened to this object, and why" ----------------------------


def test_a_run_logs_what_it_did_and_why(tmp_path: Path, app: AppTable, catalog_url: str) -> None:
    shelf = Shelf.open(write_config(tmp_path, app, catalog_url))
    stored(shelf, "cold/a.bin", "doomed/d.bin", days=20)
    stored(shelf, "old/e.bin", "old/pinned.bin", days=90)
    stored(shelf, "tmp/orphan.bin", "keep.bin")
    app.insert(REF.format("cold/a.bin"), REF.format("doomed/d.bin"), REF.format("keep.bin"))
    shelf.pin("old/pinned.bin")
    engine = shelf.catalog.engine

    shelf.scan(["local"])  # (a dry run's scan of every tier would stop at the broken one)
    shelf.run(dry_run=True, scan=False)
    assert ActionLog(engine).count() == 0  # a dry run logs nothing (I4)

    outcome = shelf.run()
    assert outcome.status == "partial"
    shelf.close()

    # the object a row pointed at, asked by its key, by the row's old value and its new one
    moved = log_json(tmp_path, "--key", "cold/a.bin")
    assert log_json(tmp_path, "--key", REF.format("cold/a.bin")) == moved
    assert query(tmp_path, key="cold/cold/a.bin") == moved
    entry = one(moved, action="migrate")
    assert entry["run_id"] == outcome.run_id
    assert (entry["command"], entry["rule"], entry["tier"], entry["to"]) == (
        "run",
        "to-cloud",
        "local",
        "cloud",
    )
    assert (entry["outcome"], entry["bytes"], entry["age"]) == ("done", 100, "modified")
    assert "older than after = 10 days (counted from modified" in entry["reason"]
    aged_from = datetime.fromisoformat(entry["aged_from"])
    assert timedelta(days=19) < utcnow() - aged_from < timedelta(days=21)
    assert app.values() == sorted(
        [REF.format("doomed/d.bin"), REF.format("keep.bin"), "cold/cold/a.bin"]
    )

    expired = one(query(tmp_path, key="old/e.bin"), action="expire")
    assert (expired["outcome"], expired["rule"], expired["age"]) == ("done", "retention", "created")
    assert expired["reason"].startswith("retention: older than after = 60 days")

    skipped = one(query(tmp_path, key="old/pinned.bin"), outcome="skipped")
    assert (skipped["action"], skipped["rule"], skipped["reason"]) == (
        "expire",
        "retention",
        "pinned",
    )

    failed = one(query(tmp_path, key="doomed/d.bin"), outcome="failed")
    assert (failed["action"], failed["rule"], failed["to"]) == ("migrate", "to-broken", "broken")
    assert "cannot create the folder" in failed["reason"]  # the error

    orphan = one(query(tmp_path, key="tmp/orphan.bin"), action="delete-orphan")
    assert orphan["reason"].startswith("no reference names it; older than grace")

    assert query(tmp_path, key="keep.bin") == []  # nothing happened to it
    retention = query(tmp_path, rule="retention")
    assert sorted(e["key"] for e in retention) == ["old/e.bin", "old/pinned.bin"]
    failures = query(tmp_path, outcome="failed")
    assert sorted(e["key"] for e in failures) == ["", "doomed/d.bin"]  # and the listing
    assert [e["key"] for e in query(tmp_path, tier="cloud")] == ["cold/a.bin"]
    assert query(tmp_path, since="1h") == query(tmp_path, run_id=outcome.run_id)
    assert query(tmp_path, until="1h") == []

    text = shelflife("log", "--key", "cold/a.bin", cwd=tmp_path, env={"COLUMNS": "200"})
    assert text.returncode == 0, text.stderr
    assert "to-cloud" in text.stdout
    assert "migrate" in text.stdout

    lines = shelflife("log", "--jsonl", cwd=tmp_path)
    assert lines.returncode == 0, lines.stderr
    exported = [json.loads(line) for line in lines.stdout.splitlines()]
    ids = [item["id"] for item in exported]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    assert len(exported) == len(outcome.actions) + len(outcome.skipped) + len(outcome.failed)
    rest = shelflife("log", "--jsonl", "--after", str(ids[2]), cwd=tmp_path)
    assert [json.loads(line)["id"] for line in rest.stdout.splitlines()] == ids[3:]


def test_bad_filters_are_usage_errors(tmp_path: Path, app: AppTable) -> None:
    write_config(tmp_path, app, f"sqlite:///{tmp_path / 'catalog.db'}")
    for args, message in [
        (["--since", "last tuesday"], "neither a duration nor an ISO 8601 time"),
        (["--tier", "nowhere"], "unknown tier"),
        (["--outcome", "gone"], "done, skipped, failed"),
        (["--key", "../escape"], "neither a key nor a value"),
    ]:
        result = shelflife("log", *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr


def test_deletions_restores_and_recalls_by_users_are_logged(tmp_path: Path, app: AppTable) -> None:
    extra = """
[[rules]]
id = "trash"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 1.0
mode = "quarantine"
filter = { prefix = "q/" }
"""
    config = write_config(tmp_path, app, f"sqlite:///{tmp_path / 'c.db'}", extra, broken=False)
    shelf = Shelf.open(config)
    stored(shelf, "gone.bin", "q/back.bin", "far.bin", "keep.bin")
    app.insert(REF.format("keep.bin"))
    shelf.delete("gone.bin")
    shelf.run(rule="trash")
    shelf.restore("q/back.bin")
    shelf.recall("far.bin", to="cloud")
    log = ActionLog(shelf.catalog.engine)

    def actions(key: str) -> list[tuple[str, str, str]]:
        return [(e.command, e.action, e.outcome) for e in log.page(LogFilter(keys=(key,)))]

    assert actions("gone.bin") == [("delete", "delete", "done")]
    (deleted,) = shelf.log(key="gone.bin")
    assert (deleted.bytes, deleted.reason) == (80, "deleted on request")
    assert actions("q/back.bin") == [("run", "quarantine", "done"), ("restore", "restore", "done")]
    assert actions("far.bin") == [("recall", "recall", "done")]
    (recalled,) = shelf.log(key="cold/far.bin")  # the Python API, by the row's new spelling
    assert (recalled.tier, recalled.to, recalled.bytes) == ("local", "cloud", 70)
    assert [e.key for e in shelf.log(run=None, outcome="done", limit=2)] == [
        "q/back.bin",
        "far.bin",
    ]
    shelf.close()


class Interrupted(BaseException):
    """Stands in for a process killed at a checkpoint (nothing catches it)."""


def test_recovery_logs_each_migration_it_settles(tmp_path: Path, app: AppTable) -> None:
    from shelflife.base.faults import hooked

    shelf = Shelf.open(write_config(tmp_path, app, f"sqlite:///{tmp_path / 'c.db'}", broken=False))
    stored(shelf, "cold/a.bin", days=20)
    stored(shelf, "keep.bin")
    app.insert(REF.format("cold/a.bin"), REF.format("keep.bin"))

    def interrupt() -> None:
        raise Interrupted

    with hooked("repointed", interrupt), pytest.raises(Interrupted):
        shelf.run(rule="to-cloud")
    assert shelf.log(key="cold/a.bin") == []  # the migration is unfinished, nothing done yet
    assert shelf.recover() == {"completed": 1}
    (settled,) = shelf.log(key="cold/a.bin")
    assert (settled.command, settled.action, settled.outcome) == ("recover", "recover", "done")
    assert (settled.rule, settled.tier, settled.to) == ("to-cloud", "local", "cloud")
    assert settled.reason is not None
    assert settled.reason.startswith("interrupted migration of run run-")
    shelf.close()


def test_a_fanned_out_batch_keeps_the_age_the_log_records(
    tmp_path: Path, app: AppTable, catalog_url: str
) -> None:
    """A Celery worker's side (execute_batch) writes the run_actions ledger the
    coordinator's run record, and so the log, is read from: ages are carried through."""
    shelf = Shelf.open(write_config(tmp_path, app, catalog_url))
    stored(shelf, "old/x.bin", days=90)
    stored(shelf, "keep.bin")
    app.insert(REF.format("keep.bin"))
    shelf.scan(["local"])
    (planned,) = shelf.plan(rule="retention", scan=False).actions
    with shelf.context.run_lock("shelflife run", run_id="run-x", fanned_out=True):
        # a worker takes a batch only while its run holds the lease
        execute_batch(shelf.context, "run-x", utcnow(), [Action.from_json(planned.as_json())])
    (done,), _, _ = RunActions(shelf.catalog.engine).results("run-x")
    assert (done.age, done.aged_from) == ("created", planned.aged_from)
    shelf.close()


# -- the catalog: paging, pruning, 10^6 entries ------------------------------------------


def test_the_migrations_make_the_schema(catalog: Catalog) -> None:
    """0012 creates the action log (and run_actions' age columns) as schema.py declares
    them: no difference between the migrated database and the tables' metadata."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shelflife.catalog.schema import metadata

    with catalog.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def entry(key: str, at: datetime, **fields: Any) -> LogEntry:
    values: dict[str, Any] = {
        "command": "run",
        "action": "expire",
        "tier": "local",
        "outcome": "done",
        "rule": "r",
        **fields,
    }
    return LogEntry(recorded_at=at, key=key, **values)


def test_pages_follow_ids_and_pruning_keeps_the_young(catalog: Catalog) -> None:
    log = ActionLog(catalog.engine)
    old = [entry(f"old/{i}", T0 - timedelta(days=100, minutes=i)) for i in range(25)]
    young = [entry(f"new/{i}", T0 - timedelta(days=1), rule="other") for i in range(30)]
    assert log.write([*old, *young]) == 55
    pages, after = [], 0
    while page := log.page(LogFilter(), after=after, limit=10):
        pages.append(page)
        after = page[-1].id or 0
    assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 5]
    ids = [e.id for p in pages for e in p]
    assert ids == sorted(ids)
    assert [e.key for e in log.stream(LogFilter(rule="other"), limit=4)] == [
        f"new/{i}" for i in range(4)
    ]
    assert [e.key for e in log.page(LogFilter(), limit=3, newest=True)] == [
        "new/27",
        "new/28",
        "new/29",
    ]

    assert log.prune(T0 - timedelta(days=90), batch=10, budget=0) == (10, True)  # one batch
    assert log.prune(T0 - timedelta(days=90), batch=10) == (15, False)
    assert sorted(e.key for e in log.stream(LogFilter())) == sorted(e.key for e in young)


@pytest.mark.postgres
def test_a_reader_after_the_last_id_misses_no_entry_committed_late(pg_catalog_url: str) -> None:
    """A run's batch in a transaction still open while an ``rm`` logs its deletion: the
    writers take turns, so an export that continues ``after`` the last id it read sees
    both, whichever would have committed first."""
    catalog = Catalog.open(pg_catalog_url)
    log = ActionLog(catalog.engine)
    seen: list[str] = []
    cursor = 0

    def export() -> None:  # what `shelflife log --jsonl --after ID` reads
        nonlocal cursor
        for item in log.stream(LogFilter(), after=cursor):
            seen.append(item.key)
            cursor = item.id or cursor

    def waits_its_turn() -> bool:
        with catalog.engine.connect() as conn:
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool(conn.exec_driver_sql(query).scalar_one())

    held = catalog.engine.connect()
    batch = held.begin()
    append(held, [entry("run/batch.bin", T0).row()])  # its id is given, not yet committed
    rm = threading.Thread(target=log.write, args=([entry("rm/object.bin", T0)],))
    rm.start()
    deadline = time.monotonic() + 60
    while rm.is_alive() and not waits_its_turn():  # done, or waiting for the batch's end
        assert time.monotonic() < deadline, "the second writer neither wrote nor waited"
        time.sleep(0.01)
    export()  # an exporter polls now
    batch.commit()
    held.close()
    rm.join(60)
    export()
    assert seen == ["run/batch.bin", "rm/object.bin"]
    ids = [e.id for e in log.stream(LogFilter())]
    assert ids == sorted(ids)
    catalog.close()


@pytest.mark.postgres
def test_a_log_the_database_refuses_is_a_warning_not_a_failed_run(
    tmp_path: Path, app: AppTable, pg_catalog_url: str
) -> None:
    """The action log's table altered under shelflife: writing it fails with the
    database's own error (no OperationalError). The run still ends as it went: recorded
    ok, exit 0, its plan dropped, a warning said."""
    config = write_config(tmp_path, app, pg_catalog_url, broken=False)
    shelf = Shelf.open(config)
    stored(shelf, "cold/a.bin", days=20)
    app.insert(REF.format("cold/a.bin"))
    with shelf.catalog.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE action_log RENAME COLUMN reason TO why")
    shelf.close()
    result = shelflife("run", "--rule", "to-cloud", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "action log not written" in result.stderr
    assert 'column "reason"' in result.stderr
    assert "Traceback" not in result.stderr
    body = json.loads(result.stdout)
    assert (body["status"], [a["key"] for a in body["actions"]]) == ("ok", ["cold/a.bin"])
    assert app.values() == ["cold/cold/a.bin"]
    (recorded,) = json.loads(shelflife("runs", "--json", cwd=tmp_path).stdout)["runs"]
    assert (recorded["run_id"], recorded["status"]) == (body["run_id"], "ok")
    with Shelf.open(config) as again:  # the applied plan is dropped, as after any run
        items = plan_items.select().where(plan_items.c.plan_id == body["plan_id"])
        with again.catalog.engine.connect() as conn:
            assert body["plan_id"]
            assert conn.execute(items).all() == []


def test_ids_never_restart_once_the_log_is_pruned_empty(catalog: Catalog) -> None:
    """A quiet spell longer than ``keep`` prunes every entry: the next one still gets an
    id above every id given before (a cursor an exporter holds stays behind it)."""
    log = ActionLog(catalog.engine)
    log.write(entry(f"old/{i}", T0 - timedelta(days=100)) for i in range(3))
    last = max(e.id or 0 for e in log.stream(LogFilter()))
    assert log.prune(T0) == (3, False)
    assert log.count() == 0
    log.write([entry("new", T0)])
    (new,) = log.page(LogFilter(), after=last)
    assert new.key == "new"


def test_a_sqlite_log_of_0013_keeps_its_entries_and_ids_when_upgraded(tmp_path: Path) -> None:
    """0014 copies the SQLite table into one declared AUTOINCREMENT, entries, ids and
    indexes kept; its downgrade copies it back."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from shelflife.catalog.catalog import MIGRATIONS, create_catalog_engine

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = create_catalog_engine(url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0013_rate_limits")
    ActionLog(engine).write(entry(f"k/{i}", T0) for i in range(5))
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM action_log WHERE id > 3")
    engine.dispose()

    catalog = Catalog.open(url)
    log = ActionLog(catalog.engine)
    assert [(e.id, e.key) for e in log.stream(LogFilter())] == [(1, "k/0"), (2, "k/1"), (3, "k/2")]
    with catalog.engine.connect() as conn:
        made = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'action_log'"
        ).scalar_one()
        indexes = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'action_log'"
        ).scalars()
        assert "AUTOINCREMENT" in made
        assert {"ix_action_log_key", "ix_action_log_rule", "ix_action_log_run"} <= set(indexes)
    log.write([entry("after", T0)])
    assert [e.id for e in log.page(LogFilter(keys=("after",)))] == [4]
    with catalog.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0013_rate_limits")
    catalog.close()


def test_a_run_prunes_entries_older_than_keep(tmp_path: Path, app: AppTable) -> None:
    keep = '[action_log]\nkeep = "7d"'
    config = write_config(tmp_path, app, f"sqlite:///{tmp_path / 'c.db'}", keep, broken=False)
    shelf = Shelf.open(config)
    log = ActionLog(shelf.catalog.engine)
    now = utcnow()
    log.write([entry("ancient", now - timedelta(days=8)), entry("recent", now - timedelta(days=6))])
    stored(shelf, "tmp/orphan.bin", "keep.bin")
    app.insert(REF.format("keep.bin"))
    shelf.run()
    assert sorted(e.key for e in log.stream(LogFilter())) == ["recent", "tmp/orphan.bin"]
    log.write([entry("ancient", now - timedelta(days=8))])
    shelf.close()
    result = shelflife("log", "--prune", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"pruned": 1}


def test_a_million_entries_prune_in_batches_and_keys_use_the_index(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    old, young = to_micros(T0 - timedelta(days=200)), to_micros(T0)
    with catalog.engine.begin() as conn:  # 10^6 rows in one statement: the older half old
        conn.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) "
            "INSERT INTO action_log (recorded_at, command, rule, action, tier, key, outcome) "
            "SELECT CASE WHEN i < 500000 THEN ? ELSE ? END, 'run', 'r', 'expire', 'local', "
            "printf('k/%07d', i), 'done' FROM n",
            (old, young),
        )
    log = ActionLog(catalog.engine)
    assert log.count() == 1_000_000

    chosen = LogFilter(keys=("k/0000077",))
    statement = page_query(chosen, after=0, limit=100).compile(
        catalog.engine, compile_kwargs={"literal_binds": True}
    )
    with catalog.engine.connect() as conn:  # the very statement a --key lookup runs
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}").all()
    assert any("USING INDEX ix_action_log_key" in str(row[-1]) for row in plan), plan
    assert [e.key for e in log.page(LogFilter(keys=("k/0000077",)))] == ["k/0000077"]

    cutoff = T0 - timedelta(days=100)
    assert log.prune(cutoff, budget=0) == (10_000, True)  # one bounded batch, then stop
    removed, left = log.prune(cutoff)
    assert (removed, left) == (490_000, False)
    assert log.count() == 500_000
    assert log.count(LogFilter(until=cutoff)) == 0
    catalog.close()


def test_instants_or_durations_ago() -> None:
    now = T0
    assert parse_instant_or_ago("7d", now) == T0 - timedelta(days=7)
    assert parse_instant_or_ago("1d12h", now) == T0 - timedelta(hours=36)
    assert parse_instant_or_ago("2025-12-01T00:00:00Z", now) == datetime(2025, 12, 1, tzinfo=UTC)
    for bad in ("7", "yesterday", ""):
        with pytest.raises(ValueError, match="neither a duration nor"):
            parse_instant_or_ago(bad, now)


# -- HTTP ------------------------------------------------------------------------------


def test_http_log_pages_by_cursor(tmp_path: Path, app: AppTable) -> None:
    token, writer = new_token(), new_token()
    extra = (
        f'[[api.tokens]]\nname = "reader"\nhash = "{hash_token(token)}"\nscopes = ["read"]\n'
        f'[[api.tokens]]\nname = "uploader"\nhash = "{hash_token(writer)}"\nscopes = ["write"]'
    )
    config = write_config(tmp_path, app, f"sqlite:///{tmp_path / 'c.db'}", extra, broken=False)
    shelf = Shelf.open(config)
    log = ActionLog(shelf.catalog.engine)
    log.write(entry(f"k/{i}", T0 + timedelta(seconds=i), rule=f"r{i % 2}") for i in range(23))
    shelf.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    server = subprocess.Popen(
        [SHELFLIFE, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, server, "shelflife serve")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            keys, cursor, pages, more = [], 0, 0, True
            while more:
                body = client.get("/api/v1/log", params={"limit": 5, "after": cursor}).json()
                keys += [item["key"] for item in body["entries"]]
                assert body["next"] == body["entries"][-1]["id"]
                cursor, more, pages = body["next"], body["more"], pages + 1
            assert keys == [f"k/{i}" for i in range(23)]
            assert pages == 5
            # nothing new yet: the poll keeps its cursor
            idle = client.get("/api/v1/log", params={"after": cursor}).json()
            assert idle == {"entries": [], "next": cursor, "more": False}

            body = client.get("/api/v1/log", params={"rule": "r1", "key": "k/3"}).json()
            assert [item["key"] for item in body["entries"]] == ["k/3"]
            assert body["more"] is False
            nobody = client.get("/api/v1/log", params={"key": "never/logged", "after": 7}).json()
            assert nobody == {"entries": [], "next": 7, "more": False}
            since = client.get("/api/v1/log", params={"since": "2026-01-01T00:00:20Z"}).json()
            assert [item["key"] for item in since["entries"]] == ["k/20", "k/21", "k/22"]
            for bad in (
                {"since": "soon"},
                {"outcome": "gone"},
                {"limit": 0},
                {"after": -1},
                {"tier": "nowhere"},
                {"rule": "a\x00b"},
            ):
                answer = client.get("/api/v1/log", params=bad)
                assert answer.status_code == 422, (bad, answer.text)
                assert answer.json()["code"] == "invalid_request"
            assert httpx.get(f"http://127.0.0.1:{port}/api/v1/log").status_code == 401

            (tmp_path / "outputs").mkdir(exist_ok=True)
            (tmp_path / "outputs" / "doc.txt").write_text("a document")
            write = {"Authorization": f"Bearer {writer}"}
            gone = client.delete("/api/v1/objects/doc.txt", headers=write)
            assert gone.status_code == 200, gone.text
            # polling with the last cursor reads what was logged since
            polled = client.get("/api/v1/log", params={"after": cursor}).json()
            (deleted,) = polled["entries"]
            assert deleted["key"] == "doc.txt"
            assert (polled["next"], polled["more"]) == (deleted["id"], False)
            assert (deleted["command"], deleted["action"], deleted["detail"]) == (
                "http-delete",
                "delete",
                "by token uploader",
            )
    finally:
        server.terminate()
        server.wait(20)
