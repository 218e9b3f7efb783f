"""One mutating run per catalog (DESIGN I5).

PostgreSQL catalogs use a session-level advisory lock held on a dedicated connection;
SQLite catalogs a file lock beside the database file. Either way the lock dies with the
process, so a crashed run never leaves it behind. Who holds it is written to the
``lock_holder`` table, so a second run can say whom it is waiting for.
"""

from __future__ import annotations

import os
import socket
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import Connection, delete, insert, select, text

from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.schema import lock_holder
from shelflife.errors import LockedError

ADVISORY_KEY = 0x5E1F11FE  # one lock per catalog database


class RunLock:
    """Context manager: hold the catalog's run lock, or raise LockedError (exit 4)."""

    def __init__(self, catalog: Catalog, command: str) -> None:
        self.catalog = catalog
        self.command = command[:255]
        self._file: FileLock | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> RunLock:
        engine = self.catalog.engine
        if engine.dialect.name == "postgresql":
            conn = engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY})
            if not got.scalar():
                conn.close()
                raise self._locked()
            conn.commit()
            self._conn = conn
        else:
            database = engine.url.database or "catalog"
            self._file = FileLock(f"{database}.lock")
            try:
                self._file.acquire(timeout=0)
            except Timeout:
                self._file = None
                raise self._locked() from None
        with engine.begin() as conn:
            conn.execute(delete(lock_holder))
            conn.execute(
                insert(lock_holder).values(
                    id=1,
                    pid=os.getpid(),
                    host=socket.gethostname()[:255],
                    command=self.command,
                    since=utcnow(),
                )
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            with self.catalog.engine.begin() as conn:
                conn.execute(delete(lock_holder).where(lock_holder.c.pid == os.getpid()))
        finally:
            if self._conn is not None:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                self._conn.close()
                self._conn = None
            if self._file is not None:
                self._file.release()
                self._file = None

    def _locked(self) -> LockedError:
        holder: Any = None
        try:
            with self.catalog.engine.connect() as conn:
                holder = conn.execute(select(lock_holder)).mappings().first()
        except Exception:
            holder = None
        who = (
            f"{holder['command']!r} (pid {holder['pid']} on {holder['host']}, since "
            f"{holder['since']:%Y-%m-%d %H:%M:%S} UTC)"
            if holder
            else "another run"
        )
        return LockedError(
            f"another run holds the catalog's lock: {who}",
            hint="wait for it to finish; a run that crashed releases the lock by itself",
        )
