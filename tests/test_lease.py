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
from sqlalchemy import select, text, update

from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.journal import Journal
from shelflife.catalog.lock import (
    RunLock,
    WorkerLease,
    database_now,
    gone,
    identity,
    lease_fence,
    lease_gone,
    read_holder,
)
from shelflife.catalog.schema import lease_workers, run_lease
from shelflife.errors import LeaseLost, LockedError

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
    # wait=0: taken although its lease runs a minute more, as its process is gone
    with RunLock(catalog, "shelflife run", run_id="run-next", period=60, wait=0):
        assert holder_row(catalog).run_id == "run-next"


@pytest.mark.invariant("I5")
def test_a_fanned_out_run_is_taken_over_when_its_lease_expired_and_its_workers_are_done(
    catalog: Catalog,
) -> None:
    """Its workers take queued batches until the lease expires, and a batch in progress
    ends before the next run starts."""
    period = 3.0
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
    """A lease row of a machine that cannot be asked whether its process lives: a live
    holder renews, so a run is refused at once while the lease runs, and takes it once
    it has lapsed."""
    with catalog.engine.begin() as conn:
        now = database_now(conn)
        conn.execute(
            update(run_lease)
            .where(run_lease.c.id == 1)
            .values(
                token="remote", run_id="run-remote", command="shelflife run", host="far-away",
                pid=4242, identity="another-boot/4026531836/4242/99", expires=now + 2.0,
                period=2.0, fanned_out=False,
            )
        )  # fmt: skip
    with (
        pytest.raises(LockedError, match=r"run run-remote, pid 4242 on far-away.*lease runs"),
        RunLock(catalog, "shelflife run", period=2, wait=30),  # refused, not waiting
    ):
        pass
    while holder_row(catalog).expires > time.time() - 0.5:  # lapsed (the clocks agree here)
        time.sleep(0.2)
    with RunLock(catalog, "shelflife run", run_id="run-here", period=2, wait=0):
        assert holder_row(catalog).host == socket.gethostname()[:255]


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
def test_a_coordinator_that_cannot_renew_loses_its_lease_for_good(pg_catalog_url: str) -> None:
    """Renewals stalled past the lease's end (the catalog out of reach): the run knows it
    lost the catalog, a successor takes it, and a late renewal does not revive it."""
    first, second = Catalog.open(pg_catalog_url), Catalog.open(pg_catalog_url)
    lease = RunLock(first, "shelflife run", run_id="run-stalled", period=1.5)
    try:
        with lease:
            assert lease._heartbeat is not None
            lease._heartbeat.stop()  # renewals stop coming, as when the catalog is away
            with pytest.raises(LockedError, match="run-stalled"):  # still held: refused
                RunLock(second, "shelflife run", period=1.5, wait=0).__enter__()
            while lease.why_lost() is None:  # its lease runs out
                time.sleep(0.1)
            with RunLock(second, "shelflife run", run_id="run-after", period=1.5, wait=10):
                lost = lease.why_lost()
                assert lost is not None
                assert "ran out" in lost
                lease.lost = None
                lease._renew()  # a renewal that comes late
                assert holder_row(second).run_id == "run-after"
                assert lease.why_lost() is not None
                with first.engine.begin() as conn, pytest.raises(LeaseLost):
                    lease.fence(conn)
            assert holder_row(second).token is None  # the successor's release, not ours
    finally:
        first.close()
        second.close()


@pytest.mark.invariant("I1", "I5")
def test_the_journal_takes_no_step_for_a_run_that_lost_the_lease(catalog: Catalog) -> None:
    """Every journal step is fenced: once another run holds the catalog, the old run's
    coordinator (by its token) and its workers (by its run id) are refused."""
    with RunLock(catalog, "shelflife run", run_id="run-old", period=30) as lease:
        coordinator = Journal(catalog.engine, lease.fence)
        worker = Journal(catalog.engine, lease_fence(run_id="run-old"))
        (entry,) = coordinator.begin("run-old", "cold", "local", "cloud", [("a.bin", 3)], utcnow())
        worker.advance([entry.id], "copied", utcnow(), {entry.id: "sha256:00"})
        with catalog.engine.begin() as conn:  # what a successor's claim does to the row
            conn.execute(update(run_lease).values(token="successor", run_id="run-new"))
        for journal in (coordinator, worker):
            with pytest.raises(LeaseLost, match="no longer holds the catalog's lease"):
                journal.advance([entry.id], "repointing", utcnow())
        (left,) = Journal(catalog.engine).unfinished()
        assert left.step == "copied"  # the refused steps were not written


@pytest.mark.invariant("I5")
def test_releasing_never_hides_how_the_run_ended(catalog: Catalog) -> None:
    with (  # noqa: PT012
        pytest.raises(ValueError, match="the run's own error"),
        RunLock(catalog, "shelflife run", run_id="run-x", period=30),
    ):
        with catalog.engine.begin() as conn:  # the release will fail
            conn.execute(text("DROP TABLE run_lease"))
        raise ValueError("the run's own error")


def test_a_process_is_gone_only_when_provably_so() -> None:
    assert not gone(identity())  # this process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    taken = identity(child.pid)
    assert not gone(taken)
    child.kill()
    child.wait()
    assert gone(taken)  # this boot, this namespace, that pid runs no process
    boot, namespace, _, started = taken.split("/")
    assert gone(f"{boot}/{namespace}/{os.getpid()}/1")  # its pid reused: the holder is gone
    assert not gone(f"another-boot/{namespace}/{child.pid}/{started}")  # cannot be asked
    assert not gone(f"{boot}/1/{child.pid}/{started}")  # another container's pids
    assert not gone(None)


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
