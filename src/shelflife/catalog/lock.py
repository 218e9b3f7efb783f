"""One mutating run per catalog (DESIGN I5): the run lease.

A run holds the catalog through two things:

- a **handle** that dies with its process or its database session: a session advisory
  lock on PostgreSQL (keyed by the catalog's schema too), a file lock beside the database
  on SQLite. Two coordinators never hold it at once.
- the **lease**, the ``run_lease`` row: which run holds the catalog (run id, command,
  host, pid, since) and until when (``expires``, by the database's clock, the host's on
  SQLite). The coordinator renews it every third of ``[executor] lease``; the workers
  of a fanned-out run check it before each batch and drop the batch once it is gone or
  belongs to another run. While a worker takes a batch it holds a ``lease_workers`` row
  of its own, renewed the same way.

A new run takes the catalog when the handle is free and the lease is released; or held
by a process of this host that is gone (a crash: taken at once); or, for any other
holder, once it has expired. A run whose batches went to workers is taken over only once
its lease has expired (its workers stop taking batches then) and no worker of it is
still taking a batch: a worker writes its row before it checks the lease, so a successor
either sees the row or the worker sees the lease gone. It waits for that (at most a few
lease periods) rather than failing; a holder that is alive is refused with exit 4, naming
it.

A coordinator whose lease was taken over, or (PostgreSQL) could not be renewed before it
expired, is told by :attr:`RunLock.lost`: its dispatcher stops sending batches and the
run ends partial. A handle whose session was lost (a database restart) is taken again;
meanwhile the lease, still renewed, keeps others out.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.schema import lease_workers, run_lease
from shelflife.errors import LockedError

LOG = logging.getLogger("shelflife.lease")
ADVISORY_KEY = 0x5E1F11FE - 2**31  # with the schema's: one lock per catalog (int4 pair)
DEFAULT_PERIOD = 30.0


def database_now(conn: Connection) -> float:
    """Seconds since the epoch by the catalog database's clock (the host's on SQLite),
    so that hosts whose clocks differ agree on when a lease expires."""
    if conn.dialect.name == "postgresql":
        value: Any = conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar()
        return float(value)
    return time.time()


def _alive(host: str | None, pid: int | None) -> bool:
    """False only for a process of this host that is gone; a process elsewhere may live."""
    if host != _HOST or not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HOST = socket.gethostname()[:255]


def _schema_key(conn: Connection) -> int:
    """The catalog's schema as the second key of a PostgreSQL advisory lock (int4)."""
    schema = str(conn.execute(text("SELECT current_schema()")).scalar() or "")
    return zlib.crc32(schema.encode()) - 2**31


@dataclass(frozen=True)
class Holder:
    """The lease row, as another process sees it."""

    token: str | None
    run_id: str | None
    command: str | None
    host: str | None
    pid: int | None
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


def read_holder(conn: Connection) -> Holder | None:
    row = conn.execute(select(run_lease).where(run_lease.c.id == 1)).mappings().first()
    if row is None:
        return None
    return Holder(
        row["token"],
        row["run_id"],
        row["command"],
        row["host"],
        row["pid"],
        row["since"],
        row["expires"],
        row["period"],
        bool(row["fanned_out"]),
    )


def lease_gone(engine: Engine, run_id: str) -> str | None:
    """Why a worker must not take a batch of ``run_id`` (None: the run holds its lease)."""
    with engine.connect() as conn:
        holder = read_holder(conn)
        now = database_now(conn)
    if holder is None or holder.token is None or holder.run_id != run_id:
        return f"run {run_id} no longer holds the catalog's lease"
    if holder.expires is not None and holder.expires <= now:
        return f"the lease of run {run_id} expired {now - holder.expires:.0f}s ago"
    return None


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
        self._thread.join(timeout=10)


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
        self._deadline = 0.0  # by this host's monotonic clock: the lease runs out
        self._file: FileLock | None = None
        self._conn: Connection | None = None
        self._heartbeat: _Heartbeat | None = None

    # -- taking and giving back ------------------------------------------------------------

    def __enter__(self) -> RunLock:
        # a dead process's database session ends within moments of it
        deadline = time.monotonic() + max(self.wait, 10.0)
        while not self._take_handle():
            # held: by a live run (refused), or by a dead one whose session is ending
            holder = self._holder()
            if holder is None or _alive(holder.host, holder.pid) or time.monotonic() > deadline:
                raise self._locked()
            time.sleep(0.1)
        try:
            self._take_lease()
        except BaseException:
            self._release_handle()
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
        finally:
            self._release_handle()

    def _take_handle(self) -> bool:
        """Take the handle if it is free."""
        engine = self.catalog.engine
        name = engine.dialect.name
        if name == "postgresql":
            conn = engine.connect()
            try:
                # one catalog per database and schema: two schemas are two catalogs
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:k, :schema)"),
                    {"k": ADVISORY_KEY, "schema": _schema_key(conn)},
                ).scalar()
                conn.commit()
            except BaseException:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._conn = conn
        else:
            database = engine.url.database or "catalog"
            self._file = FileLock(f"{database}.lock")
            try:
                self._file.acquire(timeout=0)
            except Timeout:
                self._file = None
                return False
        return True

    def _release_handle(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:k, :schema)"),
                    {"k": ADVISORY_KEY, "schema": _schema_key(self._conn)},
                )
            except Exception:  # the session is gone, and its lock with it
                LOG.debug("releasing the run lock's session failed", exc_info=True)
            finally:
                self._conn.close()
                self._conn = None
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
                holder = read_holder(conn)
                now = database_now(conn)
                waiting = self._why_wait(conn, holder, now)
                if waiting is None:
                    self._claim(conn, holder, now)
                    return
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another run holds the catalog's lock: {waiting}",
                    hint="wait for it to finish; a run whose process is gone gives the lease "
                    "up once it expires ([executor] lease)",
                )
            state = re.sub(r"[\d.]+s ", "", waiting)  # once per holder and state, not per poll
            if state != said:
                said = state
                LOG.warning("waiting for the catalog's lease: %s", waiting)
            time.sleep(min(1.0, max(0.05, self.period / 10)))

    def _why_wait(self, conn: Connection, holder: Holder | None, now: float) -> str | None:
        if holder is None or holder.token is None:
            return None
        dead = not _alive(holder.host, holder.pid)
        expired = holder.expires is None or holder.expires <= now
        if not expired and holder.fanned_out:
            # its workers take queued batches until the lease expires
            return f"{holder.describe(now)}, whose workers stop when it expires"
        if not expired and not dead:
            return f"{holder.describe(now)}, whose session is gone; waiting for it to expire"
        if holder.fanned_out and holder.run_id:
            workers = conn.execute(
                select(lease_workers.c.host, lease_workers.c.pid, lease_workers.c.expires).where(
                    lease_workers.c.run_id == holder.run_id, lease_workers.c.expires > now
                )
            ).all()
            # a batch a worker started before the lease expired: let it end (or expire)
            if workers:
                host, pid, _ = workers[0]
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
        try:
            with self.catalog.engine.begin() as conn:
                now = database_now(conn)
                changed = conn.execute(
                    update(run_lease)
                    .where(run_lease.c.id == 1, run_lease.c.token == self.token)
                    .values(expires=now + self.period)
                )
                if changed.rowcount != 1:
                    holder = read_holder(conn)
                    taken = holder.describe(now) if holder and holder.token else "nobody"
                    self._lose(f"the catalog's lease was taken over by {taken}")
                    return
            self._deadline = time.monotonic() + self.period
        except Exception as exc:
            # On PostgreSQL a coordinator cut from the catalog must assume that another
            # has taken over once its lease ran out. On SQLite the file lock proves it
            # alive to every process that could take over (one host): a renewal held up
            # by a long write elsewhere loses nothing.
            remote = self.catalog.engine.dialect.name == "postgresql"
            if remote and time.monotonic() >= self._deadline:
                self._lose(f"the catalog's lease could not be renewed in time: {exc}")
            else:
                LOG.warning("renewing the catalog's lease failed, will retry: %s", exc)
            return
        self._keep_handle()

    def _keep_handle(self) -> None:
        """Take the handle again after its session was lost (a database restart): the
        lease, still ours, is what keeps others out meanwhile."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1")).scalar()
                self._conn.commit()
                return
            except Exception:
                LOG.warning("the run lock's database session was lost; taking it again")
                try:
                    self._conn.close()
                except Exception:
                    LOG.debug("closing the lost session failed", exc_info=True)
                self._conn = None
        elif self._file is not None:
            return
        try:
            if not self._take_handle():
                LOG.warning("the run lock's session lock is held by a run waiting for ours")
        except Exception as exc:
            LOG.warning("taking the run lock's session lock again failed: %s", exc)

    def why_lost(self) -> str | None:
        """Why this run no longer holds the catalog (it must stop), or None."""
        return self.lost

    def _lose(self, reason: str) -> None:
        self.lost = reason
        LOG.error("run %s: %s; the run stops", self.run_id, reason)

    # -- refusing --------------------------------------------------------------------------

    def _holder(self) -> Holder | None:
        try:
            with self.catalog.engine.connect() as conn:
                return read_holder(conn)
        except Exception:
            return None

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
        except Exception as exc:
            LOG.warning("renewing the worker's lease failed, will retry: %s", exc)

    def __exit__(self, *exc_info: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        with self.engine.begin() as conn:
            conn.execute(delete(lease_workers).where(lease_workers.c.token == self.token))
