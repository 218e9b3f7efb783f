"""Service functions for orphan collection: ``gc``, release, restore.

They return the DESIGN's JSON shapes: a dry run gives the plan shape (the candidates as
``actions``), a real run the run shape (the actions taken). A refusal raises
:class:`~shelflife.errors.RefusedError`; the CLI turns it into ``"status": "refused"``
and exit code 3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shelflife.base.aio import run_sync
from shelflife.base.progress import Progress
from shelflife.base.units import evaluation_instant, utcnow
from shelflife.engine.collect import Mark, OrphanCollector
from shelflife.errors import ObjectExists, RefusedError, UsageError
from shelflife.model.actions import Action, Failure, Skip, totals
from shelflife.model.locations import Location
from shelflife.stores.transfer import transfer

if TYPE_CHECKING:
    from shelflife.service.shelf import Shelf


@dataclass
class GcOutcome:
    """What a gc did (or, for a dry run, would do).

    A dry run's candidates stay in the catalog (its marks) and are streamed by
    :meth:`iter_actions`, so planning a million deletions holds none of them in memory.
    """

    now: datetime
    dry_run: bool
    mark_ids: list[int] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    unmatched: int = 0
    unmatched_examples: list[str] = field(default_factory=list)
    planned: list[Mark] = field(default_factory=list)
    collector: OrphanCollector | None = None
    run_id: str | None = None  # the run history's id, when recorded

    @property
    def status(self) -> str:
        return "partial" if self.failed else "ok"

    def iter_actions(self) -> Iterator[Action]:
        yield from self.actions
        for mark in self.planned:
            assert self.collector is not None
            yield from self.collector.planned_actions(mark)

    def totals(self) -> dict[str, dict[str, int]]:
        result = totals(self.actions)
        for mark in self.planned:
            entry = result.setdefault(mark.action, {"objects": 0, "bytes": 0})
            entry["objects"] += mark.record.candidates
            entry["bytes"] += mark.record.bytes
        return result

    def header_json(self) -> dict[str, Any]:
        """Every field of the JSON shape except ``actions``."""
        common = {
            "skipped": [s.as_json() for s in self.skipped],
            "totals": self.totals(),
            "marks": self.mark_ids,
            "unmatched_references": {"count": self.unmatched, "examples": self.unmatched_examples},
        }
        if self.dry_run:
            return {"now": self.now.isoformat(), **common}
        run_id = self.run_id
        if run_id is None and self.mark_ids:
            run_id = "gc-" + "-".join(str(m) for m in self.mark_ids)
        return {
            "run_id": run_id,
            "status": self.status,
            "now": self.now.isoformat(),
            **common,
            "failed": [f.as_json() for f in self.failed],
        }

    def as_json(self) -> dict[str, Any]:
        """The DESIGN 5.2 shape (plan for a dry run, run otherwise), actions materialized."""
        return {**self.header_json(), "actions": [a.as_json() for a in self.iter_actions()]}


def collect_garbage(
    collector: OrphanCollector,
    *,
    lock: Callable[[], AbstractContextManager[Any]],
    recover: Callable[[], object],
    dry_run: bool,
    rule: str | None,
    at: datetime | None,
    mark: int | None,
    progress: Progress | None,
) -> GcOutcome:
    """Mark, and unless ``dry_run`` sweep, under the run lock after recovery."""
    if dry_run:
        return _collect(collector, dry_run=True, rule=rule, at=at, mark=mark, progress=progress)
    with lock():
        recover()
        return _collect(collector, dry_run=False, rule=rule, at=at, mark=mark, progress=progress)


def _collect(
    collector: OrphanCollector,
    *,
    dry_run: bool,
    rule: str | None,
    at: datetime | None,
    mark: int | None,
    progress: Progress | None,
) -> GcOutcome:
    now = evaluation_instant(at, dry_run=dry_run, what="would be collected")
    outcome = GcOutcome(now=now, dry_run=dry_run, collector=collector)
    if mark is not None:
        if dry_run:
            raise UsageError("--mark sweeps a saved mark; it cannot be combined with --dry-run")
        result = run_sync(collector.sweep(mark, now, progress))
        outcome.mark_ids.append(mark)
        outcome.actions, outcome.skipped, outcome.failed = (
            result.actions,
            result.skipped,
            result.failed,
        )
        return outcome
    if not dry_run:
        outcome.actions += run_sync(collector.purge_quarantine(now))
    marks = collector.mark_all(now, rule_id=rule, progress=progress)
    if marks:
        outcome.unmatched = marks[0].unmatched.unmatched
        outcome.unmatched_examples = marks[0].unmatched.examples
    for item in marks:
        outcome.mark_ids.append(item.record.id)
        if dry_run:
            outcome.planned.append(item)
            continue
        result = run_sync(collector.sweep(item.record.id, now, progress))
        outcome.actions += result.actions
        outcome.skipped += result.skipped
        outcome.failed += result.failed
    return outcome


def release_object(shelf: Shelf, ref: str) -> bool:
    """Delete the object ``ref`` names now, unless a reference, pin or lease holds it."""
    sources = shelf.sources()
    if not sources:
        raise RefusedError(
            "no reference source is declared, so shelflife cannot tell that nothing points here",
            hint="declare the columns that point at objects under [[references]]",
        )
    location = shelf.resolve(ref)
    # Kept while any row names the key on any tier, by any spelling: a row rewritten by a
    # migration in flight names the new tier while the old copy is still being removed.
    for source in sources:
        if source.naming([location.key]):
            return False
    if shelf.ledger.protected_keys(location.tier, [location.key], utcnow()):
        return False
    run_sync(shelf.store(location.tier).delete(location.key))
    shelf.catalog.forget(location.tier, [location.key])
    return True


async def restore_from_quarantine(shelf: Shelf, key: str, tier: str | None) -> Location:
    entry = await asyncio.to_thread(shelf.ledger.find_quarantined, key, tier)
    if entry is None:
        raise UsageError(
            f"{key!r} is not in quarantine" + (f" on tier {tier}" if tier else ""),
            hint="quarantined objects are kept for the rule's quarantine_days, then purged",
        )
    store = shelf.store(entry.tier)
    try:
        result = await transfer(store, entry.trash_key, store, entry.key, overwrite=False)
    except ObjectExists:
        raise UsageError(
            f"an object already exists at {entry.key} on {entry.tier}; not overwriting it",
            hint="move or delete that object first, then restore",
        ) from None
    await store.delete(entry.trash_key)
    now = utcnow()
    await asyncio.to_thread(shelf.catalog.forget, entry.tier, [entry.trash_key])
    await asyncio.to_thread(
        shelf.catalog.record_put,
        entry.tier,
        entry.key,
        size=result.size,
        checksum=result.checksum,
        etag=result.etag,
        now=now,
    )
    await asyncio.to_thread(shelf.ledger.set_quarantine_state, entry.id, "restored")
    return Location(entry.tier, entry.key)
