"""The run lease (DESIGN I5): one run per catalog, held by a renewed row, taken over when
its holder is gone; workers of a fanned-out run drop batches once it is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.lock import RunLock, WorkerLease, database_now, lease_gone, read_holder
from shelflife.catalog.schema import lease_workers, run_lease
from shelflife.errors import LockedError

HOLDER = textwrap.dedent("""
    import sys, time
    from shelflife.catalog import Catalog
    from shelflife.catalog.lock import RunLock
    catalog = Catalog.open(sys.argv[1])
    with RunLock(catalog, "shelflife run (holder)", run_id="run-holder", period=float(sys.argv[2]),
                 fanned_out=sys.argv[3] == "fanned"):
        print("held", flush=True)
        time.sleep(600)
""")


def hold_in_a_process(url: str, period: float, fanned: bool = False) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, str(period), "fanned" if fanned else "local"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


def holder_row(catalog: Catalog) -> Any:
    with catalog.engine.connect() as conn:
        return read_holder(conn)


@pytest.mark.invariant("I5")
def test_a_second_run_is_refused_naming_the_holder(catalog: Catalog) -> None:
    with RunLock(catalog, "shelflife run", run_id="run-first", period=5):
        with (
            pytest.raises(LockedError) as caught,
            RunLock(catalog, "shelflife gc", run_id="run-second", period=5),
        ):
            pass
        message = caught.value.message
        assert caught.value.exit_code == 4
        for part in ("'shelflife run'", "run run-first", f"pid {os.getpid()}", "since"):
            assert part in message, message
        assert socket.gethostname()[:20] in message
        assert "its lease runs" in message
    with RunLock(catalog, "shelflife gc", run_id="run-third", period=5):
        assert holder_row(catalog).run_id == "run-third"
    assert holder_row(catalog).token is None  # released


@pytest.mark.invariant("I5")
def test_a_killed_holder_on_this_host_is_taken_over_at_once(catalog: Catalog) -> None:
    process = hold_in_a_process(str(catalog.engine.url.render_as_string(False)), 60)
    try:
        with (
            pytest.raises(LockedError, match="run-holder"),
            RunLock(catalog, "shelflife run", period=60, wait=0),
        ):
            pass
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    started = time.monotonic()
    with RunLock(catalog, "shelflife run", run_id="run-next", period=60, wait=0):
        assert holder_row(catalog).run_id == "run-next"
    assert time.monotonic() - started < 30  # not the 60 s of the dead holder's lease


@pytest.mark.invariant("I5")
def test_a_fanned_out_run_is_taken_over_when_its_lease_expired_and_its_workers_are_done(
    catalog: Catalog,
) -> None:
    """Its workers take queued batches until the lease expires, and a batch in progress
    ends before the next run starts."""
    period = 1.5
    process = hold_in_a_process(str(catalog.engine.url.render_as_string(False)), period, True)
    worker = WorkerLease(catalog.engine, "run-holder", period)
    worker.__enter__()
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = time.monotonic()
    assert lease_gone(catalog.engine, "run-holder") is None  # still held: not expired
    # the dead coordinator's worker keeps its row: no successor while it works
    with (
        pytest.raises(LockedError, match=r"worker\(s\) still taking its batches"),
        RunLock(catalog, "shelflife run", period=period, wait=period + 1),
    ):
        pass
    assert time.monotonic() - killed >= period  # it waited past the lease's expiry
    gone = lease_gone(catalog.engine, "run-holder")
    assert gone is not None
    assert "expired" in gone
    worker.__exit__(None, None, None)
    with RunLock(catalog, "shelflife run", run_id="run-next", period=period, wait=0):
        assert lease_gone(catalog.engine, "run-holder") == (
            "run run-holder no longer holds the catalog's lease"
        )
        assert lease_gone(catalog.engine, "run-next") is None


@pytest.mark.invariant("I5")
def test_a_worker_that_died_does_not_hold_up_the_next_run(catalog: Catalog) -> None:
    period = 1.0
    process = hold_in_a_process(str(catalog.engine.url.render_as_string(False)), period, True)
    with catalog.engine.begin() as conn:  # a worker's row, never renewed again
        now = database_now(conn)
        conn.execute(
            lease_workers.insert().values(
                token="dead", run_id="run-holder", host="elsewhere", pid=1, since=utcnow(),
                expires=now + period,
            )
        )  # fmt: skip
    process.send_signal(signal.SIGKILL)
    process.wait()
    with (
        RunLock(catalog, "shelflife run", run_id="run-next", period=period, wait=3 * period),
        catalog.engine.connect() as conn,
    ):
        assert conn.execute(select(lease_workers)).all() == []  # the dead row is cleared


@pytest.mark.invariant("I5")
def test_a_holder_on_another_host_is_taken_over_only_once_expired(catalog: Catalog) -> None:
    """A lease row of a host that cannot be asked whether its process lives."""
    with catalog.engine.begin() as conn:
        now = database_now(conn)
        conn.execute(
            update(run_lease)
            .where(run_lease.c.id == 1)
            .values(
                token="remote", run_id="run-remote", command="shelflife run", host="far-away",
                pid=4242, expires=now + 2.0, period=2.0, fanned_out=False,
            )
        )  # fmt: skip
    with (
        pytest.raises(LockedError, match="run-remote"),
        RunLock(catalog, "shelflife run", period=2, wait=0),
    ):
        pass
    started = time.monotonic()
    with RunLock(catalog, "shelflife run", run_id="run-here", period=2, wait=10):
        waited = time.monotonic() - started
        assert holder_row(catalog).host == socket.gethostname()[:255]
    assert 0.5 < waited < 10


@pytest.mark.invariant("I5")
def test_a_coordinator_whose_lease_is_taken_knows_it_lost_it(catalog: Catalog) -> None:
    lease = RunLock(catalog, "shelflife run", run_id="run-old", period=1.2)
    with lease:
        assert lease.why_lost() is None
        with catalog.engine.begin() as conn:  # what a successor's claim does to the row
            conn.execute(update(run_lease).values(token="successor", run_id="run-new"))
        deadline = time.monotonic() + 5
        while lease.why_lost() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        reason = lease.why_lost()
        assert reason is not None
        assert "taken over" in reason
        assert "run-new" in reason


@pytest.mark.postgres
@pytest.mark.invariant("I5")
def test_a_coordinator_whose_session_is_cut_keeps_its_lease(pg_catalog_url: str) -> None:
    """A session cut (as by a database restart) frees the advisory lock, not the lease:
    the coordinator goes on renewing it and takes its session lock again, and another
    coordinator is refused meanwhile."""
    first, second = Catalog.open(pg_catalog_url), Catalog.open(pg_catalog_url)
    lease = RunLock(first, "shelflife run", run_id="run-cut", period=1.2)
    try:
        with lease:
            assert lease._conn is not None
            with second.engine.connect() as conn:
                pid = lease._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            time.sleep(1.0)  # a renewal or two
            with (
                pytest.raises(LockedError, match="run-cut"),
                RunLock(second, "shelflife run", run_id="run-after", period=1.2, wait=2),
            ):
                pass
            assert lease.why_lost() is None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the session lock is taken again
                if (
                    lease._conn is not None
                    and lease._conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid()"
                    ).scalar()
                ):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the session lock was not taken again")
        with RunLock(second, "shelflife run", run_id="run-after", period=1.2, wait=0):
            assert holder_row(second).run_id == "run-after"
    finally:
        first.close()
        second.close()


def test_the_lease_period_is_checked(tmp_path: Path) -> None:
    from shelflife.config import load_config
    from shelflife.errors import ConfigError

    for bad in ("0s", "2h", "soon"):
        path = tmp_path / "shelflife.toml"
        path.write_text(f'[tiers.local]\nurl = "file://x"\n[executor]\nlease = "{bad}"\n')
        with pytest.raises(ConfigError, match="lease"):
            load_config(path)
    path.write_text('[tiers.local]\nurl = "file://x"\n[executor]\nlease = "10s"\n')
    assert load_config(path).executor.lease.total_seconds() == 10
