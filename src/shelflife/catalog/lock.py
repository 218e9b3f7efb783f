"""One mutating run per catalog (DESIGN I5): the run lease.

A run holds the catalog through the **lease**, the ``run_lease`` row: which run holds it
(run id, command, host, pid, since), the identity of its process, and until when
(``expires``, by the database's clock; the host's on SQLite). The coordinator renews it
every third of ``[executor] lease``, by a compare-and-set on its own token that also
requires the lease not to have expired: a lease that lapsed stays lapsed. On SQLite a
file lock beside the database is held as well (one host; it dies with the process).

Workers of a fanned-out run check the lease before each batch and drop the batch once it
is gone or belongs to another run; while a worker takes a batch it holds a
``lease_workers`` row of its own, renewed the same way. Every step of a migration is
**fenced**: the journal writes a step only in a transaction that finds the lease still
held by its run (on PostgreSQL with the row locked ``FOR SHARE``, so that a successor's
claim, which locks it ``FOR UPDATE``, comes strictly before or after the step).

A new run takes the catalog when the lease is released; or held by a process that is
provably gone (same boot and pid namespace, and that pid no longer runs the process that
took it: a crash, taken over at once); or, for any other holder, once it has expired.
A run whose batches went to workers is taken over only once its lease has expired (its
workers stop taking batches then) and no worker of it is still taking a batch: a worker
writes its row before it checks the lease, so a successor either sees the row or the
worker sees the lease gone. It waits for that (at most a few lease periods) rather than
failing; a holder that is alive is refused with exit 4, naming it.

A coordinator whose lease was taken over, or (PostgreSQL) could not be renewed before it
expired, is told by :meth:`RunLock.why_lost`: it sends no further batch, its journal
steps are refused (:class:`~shelflife.errors.LeaseLost`), and the run ends.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.schema import lease_workers, run_lease
from shelflife.errors import LeaseLost, LockedError

LOG = logging.getLogger("shelflife.lease")
DEFAULT_PERIOD = 30.0
Fence = Callable[[Connection], None]


def database_now(conn: Connection) -> float:
    """Seconds since the epoch by the catalog database's clock (the host's on SQLite),
    so that hosts whose clocks differ agree on when a lease expires."""
    if conn.dialect.name == "postgresql":
        value: Any = conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar()
        return float(value)
    return time.time()


# -- whose process is it ---------------------------------------------------------------------

_HOST = socket.gethostname()[:255]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if none runs."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name may hold spaces


def _machine() -> str | None:
    """This boot of this kernel and this pid namespace: where a pid means one process."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def identity(pid: int | None = None) -> str:
    """``boot/pid-namespace/pid/start-time`` of a process (this one by default)."""
    pid = pid or os.getpid()
    machine, started = _machine(), _start_time(pid)
    if machine is None or started is None:
        return f"host:{_HOST}/{pid}"  # no /proc: only the host name and the pid
    return f"{machine}/{pid}/{started}"


def gone(holder_identity: str | None) -> bool:
    """True only when the process that took a lease has provably ended: it was taken on
    this boot, in this pid namespace, and its pid runs no process or another one."""
    if not holder_identity:
        return False
    machine = _machine()
    if holder_identity.startswith("host:"):
        host, _, pid = holder_identity[5:].rpartition("/")
        if machine is not None or host != _HOST or not pid.isdigit():
            return False  # another kind of host: it cannot be asked
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    where, _, rest = holder_identity.rpartition("/")  # where = machine/pid
    where, _, pid = where.rpartition("/")
    if machine is None or where != machine or not pid.isdigit():
        return False  # another machine, container or boot: wait for its lease instead
    return _start_time(int(pid)) != rest


# -- the lease row ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """The lease row, as another process sees it."""

    token: str | None
    run_id: str | None
    command: str | None
    host: str | None
    pid: int | None
    identity: str | None
    since: datetime | None
    expires: float | None
    period: float | None
    fanned_out: bool

    def describe(self, now: float | None = None) -> str:
        since = f", since {self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        left = ""
        if now is not None and self.expires is not None:
            remaining = self.expires - now
            left = (
                f"; its lease runs {remaining:.0f}s more"
                if remaining > 0
                else f"; its lease expired {-remaining:.0f}s ago"
            )
        return f"{self.command!r} (run {self.run_id}, pid {self.pid} on {self.host}{since}{left})"


def read_holder(conn: Connection, *, lock: bool = False) -> Holder | None:
    """The lease row; ``lock``: locked for update until the transaction ends (PostgreSQL)."""
    query = select(run_lease).where(run_lease.c.id == 1)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return Holder(
        row["token"],
        row["run_id"],
        row["command"],
        row["host"],
        row["pid"],
        row["identity"],
        row["since"],
        row["expires"],
        row["period"],
        bool(row["fanned_out"]),
    )


def lease_gone(engine: Engine, run_id: str) -> str | None:
    """Why a worker must not take a batch of ``run_id`` (None: the run holds its lease)."""
    with engine.connect() as conn:
        return _gone_for(conn, run_id=run_id)


def _gone_for(
    conn: Connection, *, run_id: str | None = None, token: str | None = None, expiry: bool = True
) -> str | None:
    query = select(run_lease.c.token, run_lease.c.run_id, run_lease.c.expires).where(
        run_lease.c.id == 1
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)  # a claim waits for this transaction
    row = conn.execute(query).first()
    now = database_now(conn)
    name = run_id or "this run"
    if (
        row is None
        or row.token is None
        or (token is not None and row.token != token)
        or (run_id is not None and row.run_id != run_id)
    ):
        return f"run {name} no longer holds the catalog's lease"
    if expiry and (row.expires is None or row.expires <= now):
        return f"the lease of run {name} expired {now - (row.expires or now):.0f}s ago"
    return None


def lease_fence(
    *, run_id: str | None = None, token: str | None = None, expiry: bool = True
) -> Fence:
    """A check for the journal to make in the transaction of each step it writes: raises
    :class:`LeaseLost` unless the run (by ``run_id`` or its lease's ``token``) still
    holds the catalog (``expiry``: and its lease has not lapsed)."""

    def fence(conn: Connection) -> None:
        reason = _gone_for(conn, run_id=run_id, token=token, expiry=expiry)
        if reason is not None:
            raise LeaseLost(
                f"{reason}; the step was not taken",
                hint="the run that holds the catalog now recovers what this one left",
            )

    return fence


class _Heartbeat:
    """A thread calling ``beat`` every ``interval`` seconds until stopped."""

    def __init__(self, name: str, interval: float, beat: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._interval = interval
        self._beat = beat
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            LOG.warning("the lease's heartbeat did not stop within 30 s (a renewal hangs)")


class RunLock:
    """Context manager: hold the catalog's run lease, or raise LockedError (exit 4).

    ``run_id`` names the run in the lease (workers check it); ``fanned_out`` says its
    batches go to workers, so that a successor waits for them."""

    def __init__(
        self,
        catalog: Catalog,
        command: str,
        *,
        run_id: str | None = None,
        period: float | None = None,
        fanned_out: bool = False,
        wait: float | None = None,
    ) -> None:
        self.catalog = catalog
        self.command = command[:255]
        self.run_id = (run_id or command)[:64]
        self.period = float(period or DEFAULT_PERIOD)
        self.fanned_out = fanned_out
        # how long to wait for a dead or expiring holder's lease (and its workers)
        self.wait = 3 * self.period + 5 if wait is None else wait
        self.token = uuid.uuid4().hex
        self.lost: str | None = None  # why this run no longer holds the catalog
        self._remote = catalog.engine.dialect.name == "postgresql"
        self._deadline = 0.0  # by this host's monotonic clock: when the lease runs out
        self._file: FileLock | None = None
        self._heartbeat: _Heartbeat | None = None

    @property
    def fence(self) -> Fence:
        """The journal's check that this run still holds the catalog (see the module)."""
        # On SQLite the file lock keeps every successor out while this process lives:
        # a renewal held up by a long write elsewhere must not stop the run.
        return lease_fence(token=self.token, expiry=self._remote)

    # -- taking and giving back ------------------------------------------------------------

    def __enter__(self) -> RunLock:
        if not self._remote:
            database = self.catalog.engine.url.database or "catalog"
            self._file = FileLock(f"{database}.lock")
            try:
                self._file.acquire(timeout=0)
            except Timeout:
                self._file = None
                raise self._locked() from None
        try:
            self._take_lease()
        except BaseException:
            self._release_file()
            raise
        self._heartbeat = _Heartbeat("shelflife-lease", self.period / 3, self._renew)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        try:
            with self.catalog.engine.begin() as conn:
                conn.execute(
                    update(run_lease)
                    .where(run_lease.c.id == 1, run_lease.c.token == self.token)
                    .values(token=None, expires=None, fanned_out=False)
                )
        except Exception as exc:  # the lease lapses by itself: never hide the run's own end
            LOG.warning("the run lease was not released (it lapses by itself): %s", exc)
        finally:
            self._release_file()

    def _release_file(self) -> None:
        if self._file is not None:
            self._file.release()
            self._file = None

    def _take_lease(self) -> None:
        """Take the lease row once its holder is gone (see the module's docstring)."""
        engine = self.catalog.engine
        deadline = time.monotonic() + self.wait
        said = ""
        while True:
            with engine.begin() as conn:
                holder = read_holder(conn, lock=True)
                now = database_now(conn)
                waiting = self._why_wait(conn, holder, now)
                if waiting is None:
                    self._claim(conn, holder, now)
                    return
            assert holder is not None
            if not gone(holder.identity) and holder.expires is not None and holder.expires > now:
                raise self._refused(waiting)  # a live holder renews its lease: refused now
            if time.monotonic() >= deadline:
                raise self._refused(waiting)
            state = re.sub(r"[\d.]+s ", "", waiting)  # once per holder and state, not per poll
            if state != said:
                said = state
                LOG.warning("waiting for the catalog's lease: %s", waiting)
            time.sleep(min(1.0, max(0.05, self.period / 10)))

    def _refused(self, waiting: str) -> LockedError:
        return LockedError(
            f"another run holds the catalog's lock: {waiting}",
            hint="wait for it to finish; a run whose process is gone gives the lease up "
            "once it expires ([executor] lease)",
        )

    def _why_wait(self, conn: Connection, holder: Holder | None, now: float) -> str | None:
        if holder is None or holder.token is None:
            return None
        dead = gone(holder.identity)
        expired = holder.expires is None or holder.expires <= now
        if not expired and holder.fanned_out:
            # its workers take queued batches until the lease expires
            return f"{holder.describe(now)}, whose workers stop when it expires"
        if not expired and not dead:
            return holder.describe(now)
        if holder.fanned_out and holder.run_id:
            workers = conn.execute(
                select(lease_workers.c.host, lease_workers.c.pid).where(
                    lease_workers.c.run_id == holder.run_id, lease_workers.c.expires > now
                )
            ).all()
            # a batch a worker started before the lease expired: let it end (or expire)
            if workers:
                host, pid = workers[0]
                return (
                    f"{holder.describe(now)}: {len(workers)} worker(s) still taking its "
                    f"batches (pid {pid} on {host})"
                )
        return None

    def _claim(self, conn: Connection, holder: Holder | None, now: float) -> None:
        values = {
            "token": self.token,
            "run_id": self.run_id,
            "command": self.command,
            "host": _HOST,
            "pid": os.getpid(),
            "identity": identity(),
            "since": utcnow(),
            "expires": now + self.period,
            "period": self.period,
            "fanned_out": self.fanned_out,
        }
        if holder is None:
            conn.execute(insert(run_lease).values(id=1, **values))
        else:
            condition = (
                run_lease.c.token.is_(None)
                if holder.token is None
                else run_lease.c.token == holder.token
            )
            changed = conn.execute(
                update(run_lease).where(run_lease.c.id == 1, condition).values(**values)
            )
            if changed.rowcount != 1:
                raise self._locked()
            if holder.run_id:
                conn.execute(delete(lease_workers).where(lease_workers.c.run_id == holder.run_id))
        self._deadline = time.monotonic() + self.period
        if holder is not None and holder.token is not None:
            LOG.warning("took the catalog's lease over from %s", holder.describe(now))

    # -- renewing --------------------------------------------------------------------------

    def _renew(self) -> None:
        if self.lost:
            return
        started = time.monotonic()
        try:
            with self.catalog.engine.begin() as conn:
                now = database_now(conn)
                condition = [run_lease.c.id == 1, run_lease.c.token == self.token]
                if self._remote:
                    condition.append(run_lease.c.expires > now)  # a lapsed lease stays lapsed
                changed = conn.execute(
                    update(run_lease).where(*condition).values(expires=now + self.period)
                )
                if changed.rowcount != 1:
                    holder = read_holder(conn)
                    if holder is not None and holder.token not in (None, self.token):
                        self._lose(f"the catalog's lease was taken over by {holder.describe(now)}")
                    else:
                        self._lose("the catalog's lease expired before it could be renewed")
                    return
            self._deadline = started + self.period
        except Exception as exc:
            if self._remote and time.monotonic() >= self._deadline:
                self._lose(f"the catalog's lease could not be renewed in time: {exc}")
            else:
                LOG.warning("renewing the catalog's lease failed, will retry: %s", exc)

    def why_lost(self) -> str | None:
        """Why this run no longer holds the catalog (it must stop), or None."""
        if (
            self.lost is None
            and self._remote
            and self._deadline
            and (time.monotonic() >= self._deadline)
        ):
            self._lose("the catalog's lease ran out before it could be renewed")
        return self.lost

    def _lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            LOG.error("run %s: %s; the run stops", self.run_id, reason)

    # -- refusing --------------------------------------------------------------------------

    def _locked(self) -> LockedError:
        holder: Holder | None = None
        now: float | None = None
        try:
            with self.catalog.engine.connect() as conn:
                holder = read_holder(conn)
                now = database_now(conn)
        except Exception:
            holder = None
        who = holder.describe(now) if holder and holder.token else "another run"
        return LockedError(
            f"another run holds the catalog's lock: {who}",
            hint="wait for it to finish; a run that crashed releases the lock by itself",
        )


class WorkerLease:
    """A worker's row while it takes a batch of ``run_id``, renewed until it is done."""

    def __init__(self, engine: Engine, run_id: str, period: float) -> None:
        self.engine = engine
        self.run_id = run_id
        self.period = period
        self.token = uuid.uuid4().hex
        self._heartbeat: _Heartbeat | None = None

    def __enter__(self) -> WorkerLease:
        with self.engine.begin() as conn:
            now = database_now(conn)
            conn.execute(
                insert(lease_workers).values(
                    token=self.token,
                    run_id=self.run_id,
                    host=_HOST,
                    pid=os.getpid(),
                    since=utcnow(),
                    expires=now + self.period,
                )
            )
        self._heartbeat = _Heartbeat("shelflife-worker-lease", self.period / 3, self._renew)
        return self

    def _renew(self) -> None:
        try:
            with self.engine.begin() as conn:
                now = database_now(conn)
                conn.execute(
                    update(lease_workers)
                    .where(lease_workers.c.token == self.token)
                    .values(expires=now + self.period)
                )
        except Exception as exc:  # the journal's fence stops the batch if it is too late
            LOG.warning("renewing the worker's lease failed, will retry: %s", exc)

    def __exit__(self, *exc_info: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(lease_workers).where(lease_workers.c.token == self.token))
        except Exception as exc:  # it expires by itself: never hide the batch's own end
            LOG.warning("the worker's lease row was not removed (it lapses by itself): %s", exc)
