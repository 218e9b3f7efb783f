"""Runs fanned out to real Celery workers (Redis, RabbitMQ) with the catalog in PostgreSQL:
the same end state as a run in one process, and nothing lost when a worker is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from tests.support.celery_site import CELERY, OBJECTS, Env, build, check_invariants, end_state
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.figures import Figures

pytestmark = pytest.mark.postgres
REDIS = "redis://127.0.0.1:6379"
RABBIT = "amqp://guest:guest@127.0.0.1:5672//"


@contextmanager
def workers(
    env: Env,
    count: int,
    *,
    kill_at: str | None = None,
    beat: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[Path]]:
    logs, processes = [], []
    queue = f"b-{env.base.name},q-{env.base.name}" if beat else f"b-{env.base.name}"
    for number in range(count):
        log = env.base / f"worker{number}.log"
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
        }
        environment["SHELFLIFE_CONFIG"] = str(env.config)
        environment.update(extra_env or {})
        if kill_at and number == 0:
            environment["SHELFLIFE_KILL_AT"] = kill_at
            environment["SHELFLIFE_KILL_ONCE"] = str(env.base / "killed")
        processes.append(
            subprocess.Popen(
                [CELERY, "-A", "shelflife.celery", "worker", "-Q", queue, "-c", "1",
                 "-n", f"w{number}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "info",
                 "--without-heartbeat", "--without-gossip", "--without-mingle",
                 *(["-B", "-s", str(env.base / "beat-schedule")] if beat and number == 0 else [])],
                cwd=env.base,
                env=environment,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
        logs.append(log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all("ready." in log.read_text() for log in logs):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("workers did not start: " + logs[0].read_text()[-2000:])
        yield logs
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def pg_catalog(pg_catalog_url: str) -> str:
    return pg_catalog_url.replace("postgresql://", "postgresql+psycopg://")


def run(env: Env) -> dict[str, object]:
    result = shelflife("-c", str(env.config), "run", "--json", cwd=env.base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    body: dict[str, object] = json.loads(result.stdout)
    return body


def flush(db: int) -> None:
    subprocess.run(["redis-cli", "-n", str(db), "flushdb"], check=True, capture_output=True)


def test_fanned_out_run_matches_a_local_run(tmp_path: Path, pg_catalog: str) -> None:
    local = build(tmp_path / "local", "sqlite:///catalog.db")
    flush(7)
    fanned = build(tmp_path / "fanned", pg_catalog, celery=f"{REDIS}/7 {REDIS}/7")
    assert end_state(local) == end_state(fanned)  # the same start

    at_home = run(local)
    with workers(fanned, 2) as logs:
        spread = run(fanned)
    assert spread["status"] == "ok"
    assert spread["totals"] == at_home["totals"]
    assert set(spread["totals"]) == {"migrate", "expire", "delete-orphan"}  # type: ignore[arg-type]
    assert end_state(local) == end_state(fanned)
    check_invariants(fanned)
    worked = [log.read_text().count("succeeded") for log in logs]
    assert all(count > 0 for count in worked), worked  # both workers took batches
    again = run(fanned)
    assert again["actions"] == []


@pytest.mark.invariant("I1", "I2")
def test_a_worker_killed_mid_batch_loses_nothing(
    tmp_path: Path, pg_catalog: str, figures: Figures
) -> None:
    """A Celery worker process killed -9 mid-batch: the batch is redelivered and settled."""
    flush(8)
    env = build(tmp_path / "killed", pg_catalog, celery=f"{REDIS}/8 {REDIS}/8")
    with workers(env, 2, kill_at="copied-object:2"):
        body = run(env)
    assert (env.base / "killed").exists()  # a worker process did die mid-batch
    assert body["status"] == "ok", body
    moved = {a["key"] for a in body["actions"] if a["action"] == "migrate"}  # type: ignore[attr-defined,index]
    expired = {a["key"] for a in body["actions"] if a["action"] == "expire"}  # type: ignore[attr-defined,index]
    assert len(moved) + len(expired) == OBJECTS  # correct totals, each once
    check_invariants(env)
    assert not list((env.base / "outputs").rglob("*.bin"))  # nothing left behind
    assert len(list((env.base / "cold").rglob("*.bin"))) == len(moved)  # no strays
    engine = create_engine(pg_catalog)
    with engine.connect() as conn:
        unfinished = conn.execute(
            text("SELECT count(*) FROM journal WHERE step NOT IN ('done', 'undone', 'failed')")
        ).scalar()
    engine.dispose()
    assert unfinished == 0
    figures.add("Celery worker killed mid-batch", kills=1, actions=OBJECTS, lost=0)


def test_rabbitmq_as_broker(tmp_path: Path, pg_catalog: str) -> None:
    flush(9)
    env = build(tmp_path / "rabbit", pg_catalog, celery=f"{RABBIT} {REDIS}/9")
    with workers(env, 2):
        body = run(env)
    assert body["status"] == "ok"
    assert set(body["totals"]) == {"migrate", "expire", "delete-orphan"}  # type: ignore[arg-type]
    check_invariants(env)


def test_the_run_task_and_the_beat_schedule(tmp_path: Path, pg_catalog: str) -> None:
    """``celery -A shelflife.celery worker -B`` as the README shows it: beat starts, and a
    ``shelflife.run`` task (what beat sends) runs the lifecycle on a worker."""
    from celery.schedules import crontab

    from shelflife.celery import app, beat_schedule, configure
    from shelflife.config import load_config

    flush(10)
    env = build(tmp_path / "beat", pg_catalog, celery=f"{REDIS}/10 {REDIS}/10")
    config = load_config(env.config)
    schedule = beat_schedule(config)
    assert schedule["shelflife-lifecycle"]["task"] == "shelflife.run"
    assert schedule["shelflife-lifecycle"]["schedule"] == crontab(minute="0", hour="3")
    assert schedule["shelflife-stats"]["task"] == "shelflife.refresh_stats"
    configure(config)
    assert app.conf.timezone == "UTC"
    with workers(env, 2, beat=True) as logs:
        app.send_task(
            "shelflife.run", kwargs={"trigger": "celery"}, queue="q-beat", ignore_result=True
        )
        deadline = time.monotonic() + 120
        runs: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            listed = shelflife("-c", str(env.config), "runs", "--json", cwd=env.base)
            runs = json.loads(listed.stdout)["runs"]
            if runs and runs[0]["status"] != "running":
                break
            time.sleep(0.5)
        assert "beat: Starting" in logs[0].read_text()
    assert runs, "the task never ran"
    assert runs[0]["trigger"] == "celery"
    assert runs[0]["status"] == "ok", runs[0]
    assert runs[0]["totals"]["migrate"]["objects"] > 0  # type: ignore[index]
    check_invariants(env)


@pytest.mark.invariant("I1", "I2", "I5")
def test_a_coordinator_killed_mid_run_loses_nothing(
    tmp_path: Path, pg_catalog: str, figures: Figures
) -> None:
    """The coordinating process SIGKILLed after sending a wave: its workers stop taking
    the run's batches once its lease lapses, the next run takes over and finishes."""
    from shelflife.catalog.lock import lease_gone
    from shelflife.catalog.schema import lease_workers, run_actions

    period = 2.0
    flush(11)
    env = build(
        tmp_path / "coordinator",
        pg_catalog,
        celery=f"{REDIS}/11 {REDIS}/11",
        executor=f'lease = "{period:.0f}s"',
    )
    with env.config.open("a") as config:
        config.write("wave = 8\n")  # [celery] is the file's last table
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
    }
    engine = create_engine(pg_catalog)
    # each batch takes a second: the first wave of eight outlasts the lease
    with workers(env, 2, extra_env={"SHELFLIFE_DELAY_AT": "batch-pending:1"}) as logs:
        coordinator = subprocess.Popen(
            [SHELFLIFE, "-c", str(env.config), "run", "--json"],
            cwd=env.base,
            env={**environment, "SHELFLIFE_KILL_AT": "wave-sent:1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        coordinator.wait(120)
        killed = time.monotonic()
        assert coordinator.returncode == -signal.SIGKILL
        with engine.connect() as conn:
            (run_id,) = conn.execute(text("SELECT id FROM runs")).one()
        successor = subprocess.Popen(  # at once: it must wait for the lease and the workers
            [SHELFLIFE, "-c", str(env.config), "run", "--json"],
            cwd=env.base,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the workers stop: the lease lapses, and the batches they were taking end
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                working = conn.execute(select(func.count()).select_from(lease_workers)).scalar()
            if lease_gone(engine, run_id) and not working:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the killed run's workers did not stop")
        stopped = time.monotonic() - killed

        def taken() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count())
                        .select_from(run_actions)
                        .where(run_actions.c.run_id == run_id)
                    ).scalar()
                    or 0
                )

        before = taken()
        time.sleep(period + 1)  # queued batches of the dead run meet its lapsed lease
        assert taken() == before  # no batch of it started since
        dropped = sum(log.read_text().count(f"of run {run_id} dropped") for log in logs)
        assert dropped > 0  # batches were still queued when the lease lapsed
        assert 0 < before < OBJECTS  # mid-run: some of the wave was taken, not all
        out, err = successor.communicate(timeout=120)  # took over, recovered, planned again
    assert successor.returncode == 0, out[-2000:] + err[-2000:]
    # never before the dead run's lease lapsed: it waited, or (on a machine slow enough that
    # it first asked after the lapse) it says the lease had expired
    assert "waiting for the catalog's lease" in err or "its lease expired" in err, err
    assert "took the catalog's lease over" in err
    body = json.loads(out)
    assert body["status"] == "ok", body
    check_invariants(env)
    listed = shelflife("-c", str(env.config), "runs", "--json", cwd=env.base)
    killed_run = next(r for r in json.loads(listed.stdout)["runs"] if r["run_id"] == run_id)
    assert killed_run["status"] == "failed"
    assert "interrupted" in json.dumps(killed_run)
    assert not list((env.base / "outputs").rglob("*.bin"))  # everything moved or expired
    with engine.connect() as conn:
        unfinished = conn.execute(
            text("SELECT count(*) FROM journal WHERE step NOT IN ('done', 'undone', 'failed')")
        ).scalar()
    engine.dispose()
    assert unfinished == 0
    rows = [value for value in end_state(env)["rows"] if value]  # type: ignore[attr-defined]
    assert all(value.startswith("cold/") for value in rows)
    assert len(list((env.base / "cold").rglob("*.bin"))) == len(rows)  # no strays
    figures.add(
        "scale-out: coordinator killed mid-run",
        kills=1,
        actions=OBJECTS,
        dropped_batches=dropped,
        stopped_within_ms=int(stopped * 1000),
        lost=0,
        dangling=0,
    )
