"""Storing one object: the write to its tier and the catalog rows that keep it safe.

Every write shelflife makes for a caller (``Shelf.put``, the HTTP API's uploads) goes
through :func:`put_object`, in this order:

1. an **upload lease** on the key is committed before the first byte is written, so orphan
   collection, which re-checks leases per batch, can never take an object whose write is
   in progress, nor one the application has not had time to point a row at
   (``upload_lease`` after the write starts; DESIGN I1, I3);
2. the bytes go to the store, whose own atomic write (a staging name and a rename on a
   local tier, one PUT or a multipart upload on an object store) is the only copy;
3. the **inventory row** is committed; only then does the caller hear that the object is
   stored, so an acknowledged object is always in the catalog.

The catalog writes go through an :class:`UploadRecorder`. :class:`DirectRecorder` commits
each on its own; :class:`GroupCommit`, which a server installs, commits every lease and
row pending at once in one transaction (a group commit), so a burst of uploads costs a
few transactions rather than two per upload, while each upload still waits for its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.ledger import Ledger
from shelflife.engine.context import Context
from shelflife.model.locations import Location
from shelflife.stores.base import PutResult, PutSource

log = logging.getLogger("shelflife.uploads")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a put produced: where the object is, and the value a row should store."""

    tier: str
    key: str
    size: int
    checksum: str
    ref: str

    def as_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "key": self.key,
            "bytes": self.size,
            "size": self.size,  # the HTTP API's original name for it, kept for its clients
            "checksum": self.checksum,
            "ref": self.ref,
        }


class UploadRecorder(Protocol):
    """How an upload's catalog writes are committed; each call returns once committed."""

    async def lease(self, tier: str, key: str, expires_at: datetime) -> None: ...

    async def record(self, tier: str, result: PutResult) -> None: ...


class DirectRecorder:
    """One transaction per lease and per row, in a worker thread (the store loop never
    waits on the catalog)."""

    def __init__(self, catalog: Catalog, ledger: Ledger) -> None:
        self.catalog, self.ledger = catalog, ledger

    async def lease(self, tier: str, key: str, expires_at: datetime) -> None:
        await asyncio.to_thread(self.ledger.acquire_lease, tier, key, expires_at)

    async def record(self, tier: str, result: PutResult) -> None:
        await asyncio.to_thread(
            self.catalog.record_put,
            tier,
            result.key,
            size=result.size,
            checksum=result.checksum,
            etag=result.etag,
            now=utcnow(),
        )


async def put_object(
    context: Context,
    source: PutSource,
    key: str,
    *,
    tier: str,
    overwrite: bool,
    recorder: UploadRecorder,
) -> StoredObject:
    """Lease the key, write the object, record it (see the module docstring); the key and
    tier must be valid already. A write that fails leaves no object under the key."""
    store = context.store(tier)
    expires = utcnow() + context.config.tiers[tier].upload_lease
    await recorder.lease(tier, key, expires)
    result = await store.put(key, source, overwrite=overwrite)
    await recorder.record(tier, result)
    ref = context.locator.render(Location(tier, key))
    return StoredObject(tier, key, result.size, result.checksum, ref)


_Waiter = tuple[Future[None], Any]


class GroupCommit:
    """Upload leases and inventory rows, committed in groups by one writer thread.

    Whatever is pending when the writer is free goes into the next group (at most
    ``limit`` leases and ``limit`` rows), written in one transaction. Under load,
    the uploads that arrived during one commit share the next one; alone, an upload waits
    for one commit, as it would without batching. If a group fails, its items are retried
    one by one, so a bad item fails alone and the others still commit. Usable from any
    thread and any event loop."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        limit: int = 500,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.catalog = catalog
        self._limit = limit
        self._clock = clock
        self._leases: list[_Waiter] = []
        self._rows: list[_Waiter] = []
        self._lock = threading.Condition()
        self._closed = False
        self.groups = 0  # groups written (tests and figures read it)
        self._thread = threading.Thread(target=self._loop, name="shelflife-uploads", daemon=True)
        self._thread.start()

    async def lease(self, tier: str, key: str, expires_at: datetime) -> None:
        await asyncio.wrap_future(self._submit("lease", (tier, key, expires_at)))

    async def record(self, tier: str, result: PutResult) -> None:
        await asyncio.wrap_future(self._submit("row", (tier, result)))

    def _submit(self, kind: str, item: Any) -> Future[None]:
        done: Future[None] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the upload recorder is closed")
            # The queue is looked up under the lock: the writer swaps in fresh ones.
            (self._leases if kind == "lease" else self._rows).append((done, item))
            self._lock.notify()
        return done

    def _take(self) -> tuple[list[_Waiter], list[_Waiter]] | None:
        with self._lock:
            while not self._leases and not self._rows and not self._closed:
                self._lock.wait()
            if not self._leases and not self._rows:
                return None  # closed, and nothing left
            leases, self._leases = self._leases[: self._limit], self._leases[self._limit :]
            rows, self._rows = self._rows[: self._limit], self._rows[self._limit :]
        # A lease whose upload was given up before its turn is not taken. A row is always
        # written: its object is in the store whether or not anyone still waits.
        leases = [waiter for waiter in leases if waiter[0].set_running_or_notify_cancel()]
        for waiter in rows:
            waiter[0].set_running_or_notify_cancel()
        return leases, rows

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            self._commit(*taken)
            self.groups += 1

    def _write(self, leases: list[Any], rows: list[Any]) -> None:
        written = [
            (tier, result.key, result.size, result.checksum, result.etag) for tier, result in rows
        ]
        self.catalog.record_uploads(leases, written, self._clock())

    def _commit(self, leases: list[_Waiter], rows: list[_Waiter]) -> None:
        """One transaction for the group; if it fails, one per item, so that a bad item
        fails alone."""
        try:
            self._write([item for _, item in leases], [item for _, item in rows])
        except Exception as exc:
            if len(leases) + len(rows) == 1:
                _settle((leases or rows)[0][0], exc)
                return
            log.warning("a group of upload records failed; retrying them one by one")
            for done, item in leases:
                self._alone(done, [item], [])
            for done, item in rows:
                self._alone(done, [], [item])
            return
        for done, _ in leases + rows:
            _settle(done, None)

    def _alone(self, done: Future[None], leases: list[Any], rows: list[Any]) -> None:
        try:
            self._write(leases, rows)
        except Exception as exc:
            _settle(done, exc)
        else:
            _settle(done, None)

    def close(self) -> None:
        """Commit what is pending, then stop the writer."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=30)


def _settle(done: Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return  # nobody waits for it any more
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
