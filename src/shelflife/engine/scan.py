"""Bringing the catalog's inventory up to date with what the stores hold.

A scan streams each tier's listing in chunks and upserts them, so memory stays bounded
however many objects a tier holds; the catalog write of one chunk overlaps the listing
of the next. Objects the complete listing did not see are forgotten, except rows
written after the scan started (uploads racing the scan).

An object new to the catalog on an object store is asked for the instants a copy carries
in its metadata (one HEAD each, :data:`STAMP_CONCURRENCY` at a time), so a catalog rebuilt
by a scan still knows when moved objects were created (DESIGN I9).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from shelflife.base.progress import NullProgress, Progress
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.errors import ObjectNotFound
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import ObjectInfo, Stamps

# Rows per catalog transaction: large enough that commits are rare, small enough that
# memory stays bounded (a listed object costs a few hundred bytes here).
UPSERT_BATCH = 10_000
STAMP_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class ScanResult:
    tier: str
    objects: int
    bytes: int
    removed: int
    started_at: datetime
    finished_at: datetime

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


async def scan_tier(
    catalog: Catalog, tier: str, store: ObstoreStore, progress: Progress | None = None
) -> ScanResult:
    """List ``store`` completely and make the inventory of ``tier`` match it."""
    progress = progress or NullProgress()
    started = utcnow()
    scan_id = await asyncio.to_thread(catalog.begin_scan, tier, started)
    count = total = 0
    pending: asyncio.Future[None] | None = None
    progress.start(f"scan {tier}")
    batch: list[ObjectInfo] = []

    async def record(rows: list[ObjectInfo]) -> None:
        stamps = await _new_stamps(catalog, tier, store, rows)
        await asyncio.to_thread(catalog.upsert_listed, tier, rows, started, scan_id, stamps)

    def flush() -> asyncio.Future[None]:
        rows = list(batch)
        batch.clear()
        return asyncio.ensure_future(record(rows))

    try:
        async for chunk in store.list():
            batch.extend(chunk)
            count += len(chunk)
            size = sum(info.size for info in chunk)
            total += size
            progress.advance(len(chunk), size)
            if len(batch) >= UPSERT_BATCH:
                if pending is not None:
                    await pending
                pending = flush()
        if pending is not None:
            await pending
        if batch:
            await flush()
    except BaseException:
        if pending is not None and not pending.done():
            await asyncio.gather(pending, return_exceptions=True)
        await asyncio.to_thread(catalog.fail_scan, scan_id, utcnow())
        raise
    finally:
        progress.finish()
    finished = utcnow()
    removed = await asyncio.to_thread(catalog.finish_scan, tier, scan_id, started, finished)
    return ScanResult(tier, count, total, removed, started, finished)


async def _new_stamps(
    catalog: Catalog, tier: str, store: ObstoreStore, rows: list[ObjectInfo]
) -> dict[str, Stamps]:
    """The stamps carried by the objects of ``rows`` the catalog does not know yet."""
    if not store.carries_stamps:
        return {}
    keys = [info.key for info in rows]
    known = await asyncio.to_thread(catalog.known_keys, tier, keys)
    new = [key for key in keys if key not in known]
    semaphore = asyncio.Semaphore(STAMP_CONCURRENCY)
    found: dict[str, Stamps] = {}

    async def one(key: str) -> None:
        async with semaphore:
            try:
                stamps = await store.stamps(key)
            except ObjectNotFound:
                return  # deleted since it was listed: the next scan forgets it
            if stamps is not None:
                found[key] = stamps

    await asyncio.gather(*(one(key) for key in new))
    return found
