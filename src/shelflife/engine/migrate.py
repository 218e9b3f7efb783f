"""Moving objects between tiers without losing a byte or a row (DESIGN I1, I2).

Per object: copy (create-only at the destination, so nothing there is overwritten) →
verify at the destination (size and checksum: by what the store says of the bytes it
received, or read back, as the tier's ``verify`` says) → repoint every reference (one
transaction per batch and source, ``WHERE column = old value`` so a row the application
changed meanwhile is left alone) → delete the source. Each step is journaled before it is
taken, for a whole batch at once: one statement writes the batch's ``copying`` entries
before any copy starts, one its ``copied`` entries once every copy of the batch is
verified, and so on. :meth:`Migrator.recover` — run by ``shelflife recover`` and before
every run — completes every unfinished entry it can prove safe to complete, and undoes
the rest:

- ``copying``: the destination holds the same bytes as the source → go on from
  ``copied``; it holds nothing → ``undone`` (rows untouched, the source intact); it holds
  different bytes → ``failed``, both left as they are.
- ``copied``: verify again, repoint, delete the source.
- ``repointing`` / ``deleting``: repoint again (idempotent), delete the source.

Recovery judges a copy by reading it back (an archive tier's by the store's checksum):
it is rare, and must hold even against a store that vouched wrongly.

An object moves in one request when it is small enough for the batch's share of
``[executor] transfer_memory`` (:func:`single_put_limit`), in parts above that.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from shelflife.base.faults import checkpoint
from shelflife.base.progress import NullProgress, Progress
from shelflife.base.retry import retrying
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.journal import Candidate, Entry, Journal
from shelflife.catalog.lock import Fence
from shelflife.config.model import Config
from shelflife.engine.context import Context
from shelflife.errors import ObjectExists, ObjectNotFound, ShelflifeError, StoreError
from shelflife.model.locations import Location, Locator
from shelflife.references.sources import ReferenceSource, SourceUnreadable, repoint
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import PutResult, Stamps
from shelflife.stores.proofs import Hasher
from shelflife.stores.transfer import transfer

log = logging.getLogger(__name__)

MAX_SINGLE_PUT = 5000 * 1024**2  # the largest single request: Azure's Put Blob (S3: 5 GiB)


def single_put_limit(memory: int, concurrency: int, objects: int, floor: int = 0) -> int:
    """The largest object a batch sends in one request: ``memory`` shared by the transfers
    in flight (``concurrency``, or fewer when the batch has fewer ``objects``), so that
    objects held whole stay within it together; never below ``floor`` (the destination's
    multipart_threshold) nor above what one request may carry."""
    in_flight = max(1, min(concurrency, objects))
    return min(max(memory // in_flight, floor), MAX_SINGLE_PUT)


@dataclass
class Moved:
    key: str
    size: int
    src: str
    dst: str
    rule: str


@dataclass
class MigrateResult:
    run_id: str
    moved: list[Moved] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (tier, key, error)
    recovered: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_by_pair(self) -> dict[tuple[str, str], int]:
        pairs: dict[tuple[str, str], int] = {}
        for item in self.moved:
            pairs[(item.src, item.dst)] = pairs.get((item.src, item.dst), 0) + item.size
        return pairs


def migrator(context: Context, fence: Fence | None = None) -> Migrator:
    """The migrator of a context, with its executor settings; ``fence``: the run's lease
    check, made with every journal step (:func:`shelflife.catalog.lock.lease_fence`)."""
    executor = context.config.executor
    return Migrator(
        context.config,
        context.catalog,
        Journal(context.catalog.engine, fence),
        context.locator,
        context.sources(),
        context.store,
        concurrency=executor.concurrency,
        batch_size=executor.batch_size,
        transfer_memory=executor.transfer_memory,
    )


class Migrator:
    """Executes migrations and recovers interrupted ones."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        journal: Journal,
        locator: Locator,
        sources: list[ReferenceSource],
        store: Callable[[str], ObstoreStore],
        *,
        concurrency: int = 8,
        batch_size: int = 64,
        transfer_memory: int = 256 * 1024 * 1024,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.journal = journal
        self.locator = locator
        self.sources = sources
        self.store = store
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.transfer_memory = transfer_memory

    # -- run ---------------------------------------------------------------------------------

    async def migrate(
        self,
        rule: str,
        src: str,
        dst: str,
        items: Sequence[Candidate],
        progress: Progress | None = None,
        run_id: str | None = None,
    ) -> MigrateResult:
        progress = progress or NullProgress()
        result = MigrateResult(run_id or f"migrate-{uuid.uuid4().hex[:12]}")
        progress.start(
            f"migrate {src} → {dst}", total=len(items), total_bytes=sum(item.size for item in items)
        )
        try:
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                entries = await asyncio.to_thread(
                    self.journal.begin,
                    result.run_id,
                    rule,
                    src,
                    dst,
                    [(item.key, item.size) for item in batch],
                    utcnow(),
                )
                checkpoint("journal-copying")
                known = {item.key: item.checksum for item in batch}
                stamps = {item.key: item.stamps for item in batch if item.stamps is not None}
                await self._run_batch(entries, known, result, stamps)
                progress.advance(len(batch), sum(item.size for item in batch))
        finally:
            progress.finish()
        return result

    async def _run_batch(
        self,
        entries: list[Entry],
        known: dict[str, str | None],
        result: MigrateResult,
        stamps: dict[str, Stamps] | None = None,
    ) -> None:
        semaphore = asyncio.Semaphore(self.concurrency)
        if stamps is None or len(stamps) < len(entries):
            stamps = {**await asyncio.to_thread(self._source_stamps, entries), **(stamps or {})}
        found = stamps
        whole = {
            tier: single_put_limit(
                self.transfer_memory,
                self.concurrency,
                len(entries),
                self.store(tier).multipart_threshold,
            )
            for tier in {entry.dst_tier for entry in entries}
        }

        async def copy_one(
            entry: Entry,
        ) -> tuple[Entry, tuple[str, str | None] | None, str | None]:
            async with semaphore:
                try:
                    digest = await retrying(
                        lambda: self._copy_and_verify(
                            entry, known.get(entry.key), found.get(entry.key), whole[entry.dst_tier]
                        ),
                        retries=self.store(entry.dst_tier).retries,
                        what=f"copy of {entry.key} to {entry.dst_tier}",
                    )
                except ShelflifeError as exc:
                    return entry, None, exc.message
                return entry, digest, None

        outcomes = await asyncio.gather(*(copy_one(entry) for entry in entries))
        copied = [(entry, written) for entry, written, _ in outcomes if written]
        failures = [(entry, error or "failed") for entry, _, error in outcomes if error]
        if failures:
            await asyncio.to_thread(
                self.journal.advance,
                [entry.id for entry, _ in failures],
                "failed",
                utcnow(),
                errors={entry.id: error for entry, error in failures},
            )
        result.failed += [(entry.src_tier, entry.key, error) for entry, error in failures]
        if not copied:
            return
        await asyncio.to_thread(
            self.journal.advance,
            [e.id for e, _ in copied],
            "copied",
            utcnow(),
            {e.id: digest for e, (digest, _) in copied},
        )
        checkpoint("journal-copied")
        by_tier: dict[str, list[tuple[str, int, str | None, str | None]]] = {}
        for entry, (digest, etag) in copied:
            by_tier.setdefault(entry.dst_tier, []).append((entry.key, entry.size, digest, etag))
        for tier, written in by_tier.items():
            await asyncio.to_thread(self.catalog.record_puts, tier, written, utcnow(), stamps)
        await self._finish([entry for entry, _ in copied], result)

    def _source_stamps(self, entries: Sequence[Entry]) -> dict[str, Stamps]:
        """The created and modified instants each copy carries: its source's (DESIGN I9)."""
        found: dict[str, Stamps] = {}
        by_tier: dict[str, list[str]] = {}
        for entry in entries:
            by_tier.setdefault(entry.src_tier, []).append(entry.key)
        for tier, keys in by_tier.items():
            rows = self.catalog.get_many(tier, keys)
            found.update((key, row.stamps) for key, row in rows.items())
        return found

    async def _finish(self, entries: list[Entry], result: MigrateResult) -> None:
        """Repoint, then delete the sources: the steps after a verified copy."""
        ids = [entry.id for entry in entries]
        await asyncio.to_thread(self.journal.advance, ids, "repointing", utcnow())
        checkpoint("journal-repointing")
        await asyncio.to_thread(self._repoint, entries)
        checkpoint("repointed")
        await asyncio.to_thread(self.journal.advance, ids, "deleting", utcnow())
        checkpoint("journal-deleting")
        await asyncio.to_thread(self._repoint, entries)  # rows written since are caught too
        # A row the rewrite could not change (the application changed it meanwhile, or a
        # value that could not be rewritten) still names the source: keep it (both copies
        # stay; the entry stays at "deleting" and the next recovery tries again).
        held = await asyncio.to_thread(self._still_named, entries)
        for entry in entries:
            if entry.id in held:
                result.failed.append(
                    (
                        entry.src_tier,
                        entry.key,
                        "moved, but a row still names the old location; the source is kept",
                    )
                )
        entries = [entry for entry in entries if entry.id not in held]
        by_tier: dict[str, list[Entry]] = {}
        for entry in entries:
            by_tier.setdefault(entry.src_tier, []).append(entry)
        for tier, group in by_tier.items():
            keys = [entry.key for entry in group]
            try:
                await self.store(tier).delete_many(keys)
            except StoreError as exc:
                # Rows point at the verified copy; the entries stay at "deleting" and the
                # next recovery (every run starts with one) deletes the sources.
                result.failed += [
                    (tier, key, f"moved, but the source was not deleted: {exc.message}")
                    for key in keys
                ]
                continue
            checkpoint("deleted")
            await asyncio.to_thread(self.catalog.forget, tier, keys)
            ids = [entry.id for entry in group]
            await asyncio.to_thread(self.journal.advance, ids, "done", utcnow())
            checkpoint("journal-done")
            result.moved += [Moved(e.key, e.size, e.src_tier, e.dst_tier, e.rule) for e in group]

    async def _copy_and_verify(
        self,
        entry: Entry,
        known: str | None,
        stamps: Stamps | None = None,
        whole_up_to: int = 0,
    ) -> tuple[str, str | None]:
        """Copy one object and prove the copy holds its bytes; return (SHA-256, ETag).

        Objects up to ``whole_up_to`` bytes go up in one request. Our own copy that fails
        verification for any reason — other bytes, or an error while verifying — is
        deleted before the failure is raised (DESIGN I9): nothing names it yet, and a
        copy left behind would block every later attempt."""
        src, dst = self.store(entry.src_tier), self.store(entry.dst_tier)
        size: int | None = entry.size  # as the executor's HEAD saw it just before
        if stamps is None:  # not in the inventory: what the source itself says
            info = await src.head(entry.key)
            stamps = await src.stamps(entry.key) or Stamps(info.modified, info.modified)
            size = info.size
        try:
            written = await transfer(
                src,
                entry.key,
                dst,
                entry.key,
                overwrite=False,
                stamps=stamps,
                size=size,
                whole_up_to=whole_up_to,
            )
        except ObjectExists:
            # A retried copy, or someone else's object: only identical bytes may be reused.
            return await self._reuse(entry, src, dst)
        try:
            checkpoint("copied-object")
            problem = None
            if known and known != written.checksum:
                problem = (
                    f"{entry.key} on {entry.src_tier} no longer has the bytes shelflife recorded"
                )
            else:
                problem = await _verify(dst, written, self._verify_method(entry.dst_tier))
        except Exception as exc:
            await _discard(dst, entry.key)
            if getattr(exc, "retryable", False):
                raise  # the copy is gone: the next attempt starts over
            message = exc.message if isinstance(exc, ShelflifeError) else str(exc)
            raise ShelflifeError(
                f"verification of {entry.key} on {entry.dst_tier} failed ({message}); "
                "the copy was deleted"
            ) from None
        if problem:
            await _discard(dst, entry.key)
            raise ShelflifeError(problem)
        return written.checksum, written.etag

    def _verify_method(self, tier: str) -> str:
        config = self.config.tiers.get(tier)
        return "read-back" if config is None else config.verify

    async def _reuse(
        self, entry: Entry, src: ObstoreStore, dst: ObstoreStore
    ) -> tuple[str, str | None]:
        """The destination already holds an object at the key: reuse it only when it holds
        the source's bytes."""
        if dst.archive:
            hasher = Hasher(dst.multipart_chunk_size)
            async for chunk in src.get(entry.key):
                hasher.update(chunk)
            reading = PutResult(entry.key, hasher.size, hasher.checksum(), None, hasher.proofs())
            if await dst.verify_unread(reading) is not None:
                raise ShelflifeError(
                    f"{entry.dst_tier} already holds a different object at {entry.key}"
                )
            return reading.checksum, (await dst.head(entry.key)).etag
        digest, size = await _checksum(src, entry.key)
        there, there_size = await _checksum(dst, entry.key)
        if (there, there_size) != (digest, size):
            raise ShelflifeError(
                f"{entry.dst_tier} already holds a different object at {entry.key}"
            )
        return digest, (await dst.head(entry.key)).etag

    def _repoint(self, entries: Sequence[Entry]) -> None:
        """Rewrite every row naming an entry's old location to name its new one, in every
        spelling and kind of value the resolver reads (per source, one transaction for
        the whole batch)."""
        moves = {
            Location(entry.src_tier, entry.key): Location(entry.dst_tier, entry.key)
            for entry in entries
        }
        if not moves:
            return
        for source in self.sources:
            try:
                with source.engine.begin() as conn:
                    source.rewrite(conn, moves)
            except SQLAlchemyError as exc:
                raise SourceUnreadable(f"cannot repoint rows in {source.label}: {exc}") from None

    def _still_named(self, entries: Sequence[Entry]) -> set[int]:
        """The entries some row names at the source location but not at the destination."""
        keys = sorted({entry.key for entry in entries})
        # Each row indexed by the locations it names: one pass over the rows, not one
        # per entry (a batch of 500 would otherwise cost 500 x its rows).
        naming: dict[Location, list[set[Location]]] = {}
        for source in self.sources:
            for row in source.naming_rows(keys):
                for location in row:
                    naming.setdefault(location, []).append(row)
        held: set[int] = set()
        for entry in entries:
            old = Location(entry.src_tier, entry.key)
            new = Location(entry.dst_tier, entry.key)
            if any(new not in row for row in naming.get(old, ())):
                held.add(entry.id)
        return held

    # -- recovery ------------------------------------------------------------------------------

    async def recover(
        self,
        progress: Progress | None = None,
        *,
        run_id: str | None = None,
        keys: Sequence[str] | None = None,
        settled: list[tuple[Entry, str]] | None = None,
    ) -> dict[str, int]:
        """Complete or undo every unfinished journal entry (of one run's keys, if given:
        what a redelivered batch does, leaving other workers' moves alone); return counts
        per outcome (and add each entry with its outcome to ``settled``, if given)."""
        entries = await asyncio.to_thread(self.journal.unfinished, run_id, keys)
        outcome: dict[str, int] = {}
        if not entries:
            return outcome
        progress = progress or NullProgress()
        progress.start("recover", total=len(entries))
        result = MigrateResult("recover")
        try:
            forward: list[Entry] = []
            for entry in entries:
                verdict = await self._recover_one(entry)
                outcome[verdict] = outcome.get(verdict, 0) + 1
                if settled is not None:
                    settled.append((entry, verdict))
                if verdict == "completed":
                    forward.append(entry)
                progress.advance()
            if forward:
                await self._finish(forward, result)
        finally:
            progress.finish()
        return outcome

    async def _recover_one(self, entry: Entry) -> str:
        now = utcnow()
        src, dst = self.store(entry.src_tier), self.store(entry.dst_tier)
        if entry.step in ("repointing", "deleting"):
            return "completed"
        there = await _copy_fingerprint(src, dst, entry.key)
        if entry.step == "copied":
            if there is not None and there[0] == entry.checksum:
                return "completed"
            # The verified copy vanished before any row moved: the source still serves.
            await asyncio.to_thread(
                self.journal.advance,
                [entry.id],
                "undone",
                now,
                None,
                "destination copy missing at recovery",
            )
            return "undone"
        here = await _checksum_or_none(src, entry.key)
        if there is None:
            await asyncio.to_thread(self.journal.advance, [entry.id], "undone", now)
            return "undone"
        if here is not None and here == there:
            await asyncio.to_thread(
                self.journal.advance, [entry.id], "copied", now, {entry.id: there[0]}
            )
            stamps = await asyncio.to_thread(self._source_stamps, [entry])
            await asyncio.to_thread(
                self.catalog.record_put,
                entry.dst_tier,
                entry.key,
                size=there[1],
                checksum=there[0],
                etag=(await dst.head(entry.key)).etag,
                now=now,
                stamps=stamps.get(entry.key),
            )
            return "completed"
        await asyncio.to_thread(
            self.journal.advance,
            [entry.id],
            "failed",
            now,
            None,
            "destination holds different bytes than the source; both left in place",
        )
        return "failed"


async def _checksum(store: ObstoreStore, key: str) -> tuple[str, int]:
    """SHA-256 and size of an object read through; a read cut short starts over."""

    async def read_through() -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        async for chunk in store.get(key):
            digest.update(chunk)
            size += len(chunk)
        return "sha256:" + digest.hexdigest(), size

    return await retrying(read_through, retries=store.retries, what=f"checksum of {key}")


async def _verify(dst: ObstoreStore, written: PutResult, method: str = "read-back") -> str | None:
    """What is wrong with a copy just written (None: it holds the bytes written).

    On an archive tier: judged by the store's checksum and size. With ``checksum``: the
    write's own answer, where it vouches (:attr:`PutResult.vouched`), else the store's
    stored checksum and size (one HEAD) where it reports one matching the bytes sent;
    only when neither vouches is the copy read back. With ``read-back``: read back and
    hashed."""
    if dst.archive:
        problem = await dst.verify_unread(written)
        return None if problem is None else f"verification failed for {written.key}: {problem}"
    if method == "checksum":
        if written.vouched:
            return None
        if dst.reports_proofs and written.proofs:
            size, proofs = await dst.stored_proofs(written.key)
            if size != written.size:
                return (
                    f"verification failed for {written.key} on {dst.location}: the store "
                    f"holds {size} bytes, {written.size} were written"
                )
            if proofs & written.proofs:
                return None
        # An ETag that is no MD5 (KMS encryption, some S3-compatible servers) and no
        # stored checksum prove nothing either way: the bytes themselves decide.
    there, there_size = await _checksum(dst, written.key)
    if there_size != written.size or there != written.checksum:
        return (
            f"verification failed for {written.key} on {dst.location}: read back "
            f"{there_size} bytes {there[:19]}…, expected {written.size} bytes "
            f"{written.checksum[:19]}…"
        )
    return None


async def _discard(dst: ObstoreStore, key: str) -> None:
    """Delete a copy of ours that failed verification. Should the delete fail too, the
    copy stays and is logged; the next attempt reuses it only if it holds the source's
    bytes, and otherwise fails on it, naming it."""
    try:
        await dst.delete(key)
    except StoreError as exc:
        log.warning("could not delete the unverified copy %s on %s: %s", key, dst.location, exc)


async def _copy_fingerprint(
    src: ObstoreStore, dst: ObstoreStore, key: str
) -> tuple[str, int] | None:
    """SHA-256 and size of the copy at ``dst`` (None: there is none).

    A copy on an archive tier cannot be read: when the store's own checksum and size
    match the source's bytes, it holds them and their SHA-256 is the source's; otherwise
    it is reported as other bytes."""
    if not dst.archive:
        return await _checksum_or_none(dst, key)
    try:
        await dst.stored_proofs(key)
    except ObjectNotFound:
        return None
    hasher = Hasher(dst.multipart_chunk_size)
    try:
        async for chunk in src.get(key):
            hasher.update(chunk)
    except ObjectNotFound:
        return ("unverifiable: the source is gone", -1)
    reading = PutResult(key, hasher.size, hasher.checksum(), None, hasher.proofs())
    if await dst.verify_unread(reading) is not None:
        return ("other bytes than the source's", -1)
    return reading.checksum, reading.size


async def _checksum_or_none(store: ObstoreStore, key: str) -> tuple[str, int] | None:
    try:
        return await _checksum(store, key)
    except ObjectNotFound:
        return None


__all__ = ["MigrateResult", "Migrator", "migrator", "repoint"]
