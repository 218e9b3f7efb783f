"""Bringing the catalog's inventory up to date with what the stores hold.

A scan compares each tier's listing with the inventory and writes only the difference:

- **By difference**, for stores that list in key order (every object store, and local
  tiers, whose walk visits names in key order): the listing and the inventory are read
  side by side in UTF-8 byte order, like ``comm``. An object listed with the size and ETag
  the inventory has costs no write; new and changed objects are written in batches;
  inventory rows the listing passed by are marked, and deleted once the listing has
  completed. Memory holds one listing chunk and one page of the inventory, however many
  objects a tier holds.
- **By upsert**, for a listing out of key order (found out while comparing: every key must
  sort after the one before it): every listed object is written with the scan's id, and
  rows the scan did not write are deleted at the end.

Either way, rows written after the scan began (uploads racing the scan) are never
forgotten, and a scan that fails forgets nothing.

An object new to the catalog on an object store is asked for the instants a copy carries
in its metadata (one HEAD each, :data:`STAMP_CONCURRENCY` at a time), so a catalog rebuilt
by a scan still knows when moved objects were created (DESIGN I9).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter, lt

from shelflife.base.progress import NullProgress, Progress
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.catalog import Listed, TierTotals
from shelflife.errors import CatalogError, ObjectNotFound
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import Entry, Stamps

log = logging.getLogger("shelflife.scan")

# Rows per catalog write: large enough that commits are rare, small enough that memory
# stays bounded (a listed object costs a few hundred bytes here).
WRITE_BATCH = 10_000
# Listed entries compared with the inventory in one list operation when none changed.
BLOCK = 64
# New rows after which a first scan into an empty SQLite inventory sets the index of
# objects by age aside, to build it once at the end (see Catalog.set_aside_age_index).
LOAD_ROWS = 100_000
STAMP_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class ScanResult:
    tier: str
    objects: int
    bytes: int
    removed: int
    started_at: datetime
    finished_at: datetime
    new: int = 0  # objects written because the inventory did not have them
    changed: int = 0  # ... because their size or ETag differed

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


_SIZE = itemgetter(1)


class ListingOutOfOrder(Exception):
    """The store listed a key that does not sort after the one before it."""


async def scan_tier(
    catalog: Catalog, tier: str, store: ObstoreStore, progress: Progress | None = None
) -> ScanResult:
    """List ``store`` completely and make the inventory of ``tier`` match it."""
    progress = progress or NullProgress()
    started = utcnow()
    if await asyncio.to_thread(catalog.restore_age_index):
        log.info(
            "built the catalog's index of objects by age, which a first scan had set aside "
            "(one that was killed, or one still running)"
        )
    scan_id = await asyncio.to_thread(catalog.begin_scan, tier, started)
    progress.start(f"scan {tier}")
    try:
        if store.sorted_listing:
            try:
                return await _by_difference(catalog, tier, store, scan_id, started, progress)
            except ListingOutOfOrder as exc:
                log.warning(
                    "%s does not list in key order (%s): scanning tier %s by rewriting every row",
                    store.location,
                    exc,
                    tier,
                )
                progress.finish()
                progress.start(f"scan {tier}")
        return await _by_upsert(catalog, tier, store, scan_id, started, progress)
    except BaseException:
        await asyncio.to_thread(catalog.fail_scan, scan_id, utcnow())
        raise
    finally:
        progress.finish()


class _Writer:
    """Catalog writes of one scan, one batch in flight while the next is gathered."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[None] | None = None

    async def submit(self, write: Callable[[], Awaitable[None]]) -> None:
        await self.drain()
        self._pending = asyncio.ensure_future(write())

    async def drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def abandon(self) -> None:
        if self._pending is not None and not self._pending.done():
            await asyncio.gather(self._pending, return_exceptions=True)


async def _by_difference(
    catalog: Catalog,
    tier: str,
    store: ObstoreStore,
    scan_id: int,
    started: datetime,
    progress: Progress,
) -> ScanResult:
    def spill(keys: list[str]) -> None:
        # a long run of vanished rows inside one chunk (a listing that skips a range):
        # marked here, a batch at a time, not held
        catalog.mark_vanished(tier, keys, scan_id)

    differ = _Difference(catalog.listed_state(tier), spill)
    # SQLite only: on PostgreSQL, which merges each batch from COPY, it was measured to
    # gain little, and dropping an index there locks the table against every reader
    first_load = catalog.dialect == "sqlite" and await asyncio.to_thread(catalog.inventory_empty)
    ages = _AgeIndex(catalog, first_load)
    try:
        writer = _Writer()
        count = total = new = changed = vanished = 0
        written: list[Entry] = []
        gone: list[str] = []

        async def write(rows: list[Entry], fresh: set[str], keys: list[str]) -> None:
            stamps = await _stamps(store, fresh) if fresh else {}

            def write_rows() -> None:
                ages.before(len(fresh))
                catalog.write_listed(tier, rows, started, scan_id, stamps, new=fresh)

            await asyncio.to_thread(write_rows)
            await asyncio.to_thread(catalog.mark_vanished, tier, keys, scan_id)

        fresh: set[str] = set()
        try:
            async for chunk in store.entries():
                count += len(chunk)
                size = sum(map(_SIZE, chunk))
                total += size
                new_here, changed_here = differ.feed(chunk, written, gone, fresh)
                new += new_here
                changed += changed_here
                progress.advance(len(chunk), size)
                if len(written) + len(gone) >= WRITE_BATCH:
                    vanished += len(gone)
                    await writer.submit(_bound(write, written, fresh, gone))
                    written, gone, fresh = [], [], set()
            differ.finish(gone)
            vanished += len(gone)
            await writer.submit(_bound(write, written, fresh, gone))
            await writer.drain()
        except BaseException:
            await writer.abandon()
            raise
        vanished += differ.spilled
        finished = utcnow()
        removed = await asyncio.to_thread(
            catalog.finish_scan_by_difference,
            tier,
            scan_id,
            started,
            finished,
            vanished=vanished,
            listed=TierTotals(count, total),
            written=new + changed,
        )
        return ScanResult(tier, count, total, removed, started, finished, new, changed)
    finally:
        await asyncio.to_thread(ages.restore)


class _AgeIndex:
    """The index of objects by age during a scan: set aside once a first load (a scan
    into an empty inventory) has :data:`LOAD_ROWS` new rows to write, built again when the
    scan ends, whatever the outcome. A scan killed meanwhile leaves it to the next scan,
    which builds it as it begins (:func:`scan_tier`)."""

    def __init__(self, catalog: Catalog, first_load: bool) -> None:
        self._catalog = catalog
        self._first_load = first_load
        self._rows = 0
        self._aside = False

    def before(self, rows: int) -> None:
        """Called before ``rows`` new rows are written."""
        self._rows += rows
        if self._first_load and not self._aside and self._rows >= LOAD_ROWS:
            self._catalog.set_aside_age_index()
            self._aside = True

    def restore(self) -> None:
        if self._aside:
            self._aside = False
            self._catalog.restore_age_index()


def _bound(
    write: Callable[[list[Entry], set[str], list[str]], Awaitable[None]],
    rows: list[Entry],
    fresh: set[str],
    keys: list[str],
) -> Callable[[], Awaitable[None]]:
    return lambda: write(rows, fresh, keys)


class _Difference:
    """The listing compared with the inventory, both in byte order (a merge, as ``comm``
    does): what the inventory lacks or has otherwise is written, what it has and the
    listing passed by has vanished."""

    def __init__(self, pages: Iterator[list[Listed]], spill: Callable[[list[str]], None]) -> None:
        self._pages = pages
        self._spill = spill  # takes vanished keys once WRITE_BATCH of them gather
        self.spilled = 0  # keys handed to spill
        self._page: list[Listed] = []
        self._at = 0
        self._last_listed: str | None = None
        self._last_known: str | None = None
        self._next_page()

    def _next_page(self) -> None:
        """The inventory's next page, checked to be in strictly increasing byte order."""
        page = next(self._pages, [])
        if page:
            keys = [row[0] for row in page]
            last = self._last_known
            if (last is not None and keys[0] <= last) or not all(map(lt, keys, keys[1:])):
                bad = next(
                    (b, a)
                    for a, b in zip([last, *keys], keys, strict=False)
                    if a is not None and b <= a
                )
                raise CatalogError(
                    f"the catalog returned key {bad[0]!r} after {bad[1]!r}: its key order "
                    "is not byte order, so the scan cannot compare it with the listing",
                    hint='the objects table must compare keys bytewise (COLLATE "C" on '
                    "PostgreSQL); recreate the catalog with 'shelflife scan' on an empty one",
                )
            self._last_known = keys[-1]
        self._page = page
        self._at = 0

    def feed(
        self, chunk: list[Entry], written: list[Entry], gone: list[str], fresh: set[str]
    ) -> tuple[int, int]:
        """Compare one listing chunk: new and changed entries go to ``written`` (new keys
        also to ``fresh``), vanished keys to ``gone``. Returns (new, changed).

        A block of :data:`BLOCK` entries that the inventory holds as they are listed, or
        that come after all of it (a first scan), is compared in one list operation;
        any other goes entry by entry (:meth:`_one_by_one`), which decides the same."""
        new = changed = 0
        for start in range(0, len(chunk), BLOCK):
            block = chunk[start : start + BLOCK]
            if self._unchanged(block):
                continue
            if self._all_new(block, written, fresh):
                new += len(block)
                continue
            new_here, changed_here = self._one_by_one(block, written, gone, fresh)
            new += new_here
            changed += changed_here
        return new, changed

    def _in_order(self, block: list[Entry]) -> bool:
        last = self._last_listed
        return last is None or block[0][0] > last

    def _unchanged(self, block: list[Entry]) -> bool:
        """Whether ``block`` is the inventory's next rows exactly (consumed if so)."""
        if self._at == len(self._page) and self._page:
            self._next_page()
        page, at = self._page, self._at
        end = at + len(block)
        if end > len(page) or not self._in_order(block):
            return False
        if page[at][0] != block[0][0] or page[end - 1][0] != block[-1][0]:
            return False
        # The inventory's rows are in strictly increasing order (checked by page), so a
        # block equal to them is too.
        if page[at:end] != [entry[:4] for entry in block]:
            return False
        self._at = end
        self._last_listed = block[-1][0]
        return True

    def _all_new(self, block: list[Entry], written: list[Entry], fresh: set[str]) -> bool:
        """Whether ``block`` comes after the whole inventory (recorded as new if so)."""
        if self._page or not self._in_order(block):
            return False
        keys = [entry[0] for entry in block]
        if not all(map(lt, keys, keys[1:])):
            return False  # out of order: said so one by one
        written.extend(block)
        fresh.update(keys)
        self._last_listed = keys[-1]
        return True

    def _one_by_one(
        self, chunk: list[Entry], written: list[Entry], gone: list[str], fresh: set[str]
    ) -> tuple[int, int]:
        new = changed = 0
        page, at = self._page, self._at
        last = self._last_listed
        for entry in chunk:
            key = entry[0]
            if last is not None and key <= last:
                raise ListingOutOfOrder(f"{key!r} came after {last!r}")
            last = key
            while True:
                if at == len(page):
                    self._next_page()
                    page, at = self._page, 0
                    if not page:
                        break
                known = page[at]
                if known[0] >= key:
                    break
                gone.append(known[0])
                if len(gone) >= WRITE_BATCH:
                    self._spill(gone[:])
                    self.spilled += len(gone)
                    gone.clear()
                at += 1
            if page and at < len(page) and page[at][0] == key:
                known = page[at]
                at += 1
                etag = entry[2]
                if (
                    known[1] == entry[1]
                    and known[2] == etag
                    and (etag is not None or known[3] == entry[3])
                ):
                    continue  # unchanged: no write
                changed += 1
            else:
                new += 1
                fresh.add(key)
            written.append(entry)
        self._page, self._at, self._last_listed = page, at, last
        return new, changed

    def finish(self, gone: list[str]) -> None:
        """The listing is complete: every row not yet reached has vanished."""
        page, at = self._page, self._at
        while page:
            for known in page[at:]:
                gone.append(known[0])
                if len(gone) >= WRITE_BATCH:
                    self._spill(gone[:])
                    self.spilled += len(gone)
                    gone.clear()
            self._next_page()
            page, at = self._page, 0


async def _by_upsert(
    catalog: Catalog,
    tier: str,
    store: ObstoreStore,
    scan_id: int,
    started: datetime,
    progress: Progress,
) -> ScanResult:
    count = total = 0
    writer = _Writer()
    batch: list[Entry] = []

    async def write(rows: list[Entry]) -> None:
        known = await asyncio.to_thread(catalog.known_keys, tier, [row[0] for row in rows])
        fresh = {row[0] for row in rows if row[0] not in known}
        stamps = await _stamps(store, fresh) if fresh else {}
        await asyncio.to_thread(catalog.write_listed, tier, rows, started, scan_id, stamps)

    try:
        async for chunk in store.entries():
            batch.extend(chunk)
            count += len(chunk)
            size = sum(entry[1] for entry in chunk)
            total += size
            progress.advance(len(chunk), size)
            if len(batch) >= WRITE_BATCH:
                rows, batch = batch, []
                await writer.submit(lambda rows=rows: write(rows))  # type: ignore[misc]
        rows = batch
        await writer.submit(lambda: write(rows))
        await writer.drain()
    except BaseException:
        await writer.abandon()
        raise
    finished = utcnow()
    removed = await asyncio.to_thread(catalog.finish_scan, tier, scan_id, started, finished)
    return ScanResult(tier, count, total, removed, started, finished)


async def _stamps(store: ObstoreStore, keys: set[str]) -> dict[str, Stamps]:
    """The stamps carried by the objects of ``keys`` (objects new to the catalog)."""
    if not store.carries_stamps:
        return {}
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

    await asyncio.gather(*(one(key) for key in sorted(keys)))
    return found
