"""Orphan collection: mark the objects no reference points at, then sweep them in batches.

Safety, in the order it is enforced:

1. Refuse (exit 3, nothing deleted) when no reference source is declared, when a source
   cannot be read, when a source is empty while the tier holds objects, or when the
   candidates exceed the rule's ``max_fraction`` of the tier.
2. Mark only objects older than the rule's ``grace``, not pinned, not under an upload
   lease, absent from the reference snapshot (an anti-join in the catalog).
3. At sweep time, re-check every batch: the references (each source queried for every
   spelling of the batch's keys), pins and leases, and the object itself (a HEAD: it must
   still be the object that was marked). Only then delete, or move under the trash prefix.

A mark is saved with an id, so a dry run's list can be reviewed and that same list swept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shelflife.base.faults import checkpoint
from shelflife.base.progress import NullProgress, Progress
from shelflife.catalog import Catalog
from shelflife.catalog.ledger import CandidateFilter, Ledger, MarkItem, MarkRecord, trash_key
from shelflife.catalog.schema import metadata as catalog_metadata
from shelflife.config.model import Config, RuleConfig
from shelflife.errors import RefusedError, ShelflifeError, UsageError
from shelflife.model.actions import Action, Failure, Skip
from shelflife.model.locations import Location, Locator
from shelflife.references.sources import (
    Databases,
    ParseReport,
    ReferenceSource,
    UndeclaredColumn,
    source_index,
    undeclared_columns,
)
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.transfer import head_many, transfer

HEAD_CONCURRENCY = 32
ACTION_KINDS = ("migrate", "expire", "collect-orphans")
CATALOG_TABLES = frozenset(catalog_metadata.tables) | {"alembic_version"}

# (rule action, tier) → why rules of that action may not act on that tier this time.
Blocks = dict[tuple[str, str], str]


@dataclass
class Mark:
    """A saved candidate list; its items live in the catalog, not in memory."""

    record: MarkRecord
    action: str
    unmatched: ParseReport


@dataclass
class SweepResult:
    mark_id: int
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


class OrphanCollector:
    """Marks and sweeps orphans for the collect-orphans rules of one configuration."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        ledger: Ledger,
        locator: Locator,
        sources: list[ReferenceSource],
        store: Callable[[str], ObstoreStore],
        databases: Databases | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.ledger = ledger
        self.locator = locator
        self.sources = sources
        self.store = store
        self.databases = databases

    # -- snapshot ----------------------------------------------------------------------------

    def snapshot(self, now: datetime, progress: Progress | None = None) -> tuple[int, ParseReport]:
        """Copy every location the sources name into the catalog; refuse if one is unreadable."""
        progress = progress or NullProgress()
        report = ParseReport()
        snapshot_id = self.ledger.begin_snapshot(now)
        progress.start("read references")
        try:
            for source in self.sources:
                index = source_index(self.config, source)
                counts = source.new_report()
                report.sources.append(counts)
                read = 0
                for references in source.iter_references(counts):
                    named = {loc for ref in references for loc in ref.locations}
                    self.ledger.add_refs(snapshot_id, sorted(named, key=_order), index)
                    progress.advance(counts.rows - read)
                    read = counts.rows
        except BaseException:
            self.ledger.fail_snapshot(snapshot_id)
            raise
        finally:
            progress.finish()
        self.ledger.finish_snapshot(
            snapshot_id, rows=report.rows, unmatched=report.unmatched, now=now
        )
        return snapshot_id, report

    # -- trust -------------------------------------------------------------------------------

    def blocks(self, report: ParseReport, collect_tiers: Sequence[str] = ()) -> Blocks:
        """What the references read into ``report`` forbid, per (rule action, tier):

        - a source that spells a tier's place in a way no tier declares, or holds more than
          its ``max_unmatched`` of values that match no tier, cannot protect that tier's
          objects: no rule may remove objects from it (collect, expire, or migrate, whose
          rewrite would miss those rows);
        - a column no ``[[references]]`` entry names (and ``[[ignore_columns]]`` does not
          list) that holds references to a tier's objects: no orphan collection there.
        """
        blocks: Blocks = {}
        for tier, reason in report.distrusted(self.locator, list(self.config.tiers)).items():
            for kind in ACTION_KINDS:
                blocks[(kind, tier)] = reason
        if collect_tiers:
            for finding in self.undeclared():
                for tier in finding.tiers:
                    if tier in collect_tiers:
                        blocks.setdefault(("collect-orphans", tier), _undeclared_reason(finding))
        return blocks

    def undeclared(self) -> list[UndeclaredColumn]:
        """Columns that point at objects but are not declared (see :func:`undeclared_columns`)."""
        if self.databases is None:
            return []
        return undeclared_columns(
            self.config,
            self.databases,
            self.locator,
            lambda location: self.catalog.get(location.tier, location.key) is not None,
            skip_tables=CATALOG_TABLES,
        )

    # -- mark --------------------------------------------------------------------------------

    def rules(self, rule_id: str | None = None) -> list[RuleConfig]:
        rules = [r for r in self.config.rules if r.action == "collect-orphans" and r.enabled]
        if rule_id is not None:
            rules = [r for r in rules if r.id == rule_id]
            if not rules:
                raise UsageError(f"no collect-orphans rule with id {rule_id!r}")
        return rules

    def mark_all(
        self, now: datetime, *, rule_id: str | None = None, progress: Progress | None = None
    ) -> list[Mark]:
        """Refusal checks, a fresh snapshot, then one mark per (rule, tier)."""
        rules = self.rules(rule_id)
        if not rules:
            return []
        self.check_sources(self._tiers_of(rules), need_sources=True)
        snapshot_id, report = self.snapshot(now, progress)
        blocks = self.blocks(report, self._tiers_of(rules))
        for rule in rules:
            for tier in self._tiers_of([rule]):
                reason = blocks.get(("collect-orphans", tier))
                if reason is not None:
                    raise RefusedError(
                        f"rule {rule.id!r} on tier {tier}: {reason}",
                        hint="nothing was deleted; 'shelflife check' lists what the references "
                        "hold",
                    )
        self.ledger.purge_expired_leases(now)
        marks: list[Mark] = []
        taken: dict[str, list[int]] = {}  # marks made earlier in this run, per tier
        for rule in rules:
            for tier in self._tiers_of([rule]):
                earlier = tuple(taken.get(tier, []))
                mark = self._mark(rule, tier, now, snapshot_id, report, earlier)
                marks.append(mark)
                taken.setdefault(tier, []).append(mark.record.id)
        return marks

    def check_sources(self, tiers: list[str], *, need_sources: bool) -> None:
        """Refuse (exit 3) unless the references can be trusted for deleting on ``tiers``:
        a source is declared (when ``need_sources``), each can be read, and none is empty
        while one of the tiers holds objects."""
        if need_sources and not self.sources:
            raise RefusedError(
                "no reference source is declared, so no object can be proven orphaned",
                hint="declare the columns that point at objects under [[references]]",
            )
        for source in self.sources:
            if source.count() == 0:
                for tier in tiers:
                    held = self.ledger.objects_in_tier(tier)
                    if held:
                        raise RefusedError(
                            f"reference source {source.label} is empty while tier {tier} holds "
                            f"{held} objects; refusing to treat them all as unreferenced",
                            hint="check the source's database and where clause; if it really is "
                            "empty, remove it from [[references]]",
                        )

    def _tiers_of(self, rules: list[RuleConfig]) -> list[str]:
        tiers: list[str] = []
        for rule in rules:
            for tier in self.config.tiers if rule.tier == "*" else [rule.tier]:
                if tier not in tiers:
                    tiers.append(tier)
        return tiers

    def _mark(
        self,
        rule: RuleConfig,
        tier: str,
        now: datetime,
        snapshot_id: int,
        report: ParseReport,
        earlier_marks: tuple[int, ...],
    ) -> Mark:
        selection = CandidateFilter(
            prefix=rule.filter.prefix,
            suffix=rule.filter.suffix,
            min_size=rule.filter.min_size if rule.min_size is None else rule.min_size,
            max_size=rule.filter.max_size,
            exclude_marks=earlier_marks,  # an object an earlier rule selected is taken
        )
        mark_id = self.ledger.create_mark(
            rule.id, tier, now=now, evaluated_at=now, snapshot_id=snapshot_id
        )
        action = "quarantine" if rule.mode == "quarantine" else "delete-orphan"
        count, size = self.ledger.mark_orphans(
            mark_id, tier, snapshot_id, cutoff=now - rule.grace, now=now, selection=selection
        )
        held = self.ledger.objects_in_tier(tier)
        status = "open"
        if held and count / held > rule.max_fraction:
            status = "refused"
        self.ledger.set_mark(mark_id, status=status, candidates=count, size=size)
        record = self.ledger.get_mark(mark_id)
        assert record is not None
        if status == "refused":
            raise RefusedError(
                f"rule {rule.id!r} would collect {count} of {held} objects on tier {tier} "
                f"({count / held:.0%}), above its max_fraction of {rule.max_fraction:.0%}",
                hint=f"review the list with 'shelflife gc --dry-run --rule {rule.id}'; if it is "
                "right, raise max_fraction for this run's rule",
            )
        return Mark(record, action, report)

    def planned_actions(self, mark: Mark, batch_size: int = 5000) -> Iterator[Action]:
        """The mark's candidates as actions, streamed from the catalog."""
        for items in self.ledger.iter_mark_items(mark.record.id, batch_size):
            for item in items:
                yield Action(mark.action, mark.record.rule, mark.record.tier, item.key, item.size)

    # -- sweep -------------------------------------------------------------------------------

    async def sweep(
        self, mark_id: int, now: datetime, progress: Progress | None = None
    ) -> SweepResult:
        """Act on a saved mark, re-checking each batch first."""
        record = self.ledger.get_mark(mark_id)
        if record is None:
            raise UsageError(f"no mark with id {mark_id}")
        if record.status != "open":
            raise UsageError(
                f"mark {mark_id} is {record.status}; only an open mark can be swept",
                hint="run 'shelflife gc' for a fresh mark",
            )
        rule = next((r for r in self.config.rules if r.id == record.rule), None)
        if rule is None:
            raise UsageError(
                f"mark {mark_id} belongs to rule {record.rule!r}, which no longer exists"
            )
        self.ledger.set_mark(mark_id, status="sweeping")
        progress = progress or NullProgress()
        result = SweepResult(mark_id)
        store = self.store(record.tier)
        progress.start(f"collect orphans on {record.tier}", total=record.candidates)
        try:
            for items in self.ledger.iter_mark_items(mark_id, rule.batch_size):
                await self._sweep_batch(rule, record.tier, store, items, now, result)
                progress.advance(len(items), sum(item.size for item in items))
        finally:
            progress.finish()
            self.ledger.set_mark(mark_id, status="swept")
        return result

    async def sweep_items(
        self, rule: RuleConfig, tier: str, items: list[MarkItem], now: datetime
    ) -> SweepResult:
        """Re-check and collect one batch of planned orphans (a plan's, not a mark's)."""
        result = SweepResult(mark_id=0)
        await self._sweep_batch(rule, tier, self.store(tier), items, now, result)
        return result

    async def _sweep_batch(
        self,
        rule: RuleConfig,
        tier: str,
        store: ObstoreStore,
        items: list[Any],
        now: datetime,
        result: SweepResult,
    ) -> None:
        keys = [item.key for item in items]
        checkpoint("sweep-batch")
        referenced = await asyncio.to_thread(self._still_referenced, tier, keys)
        protected = await asyncio.to_thread(self.ledger.protected_keys, tier, keys, now)
        errors: dict[str, ShelflifeError] = {}
        current = await head_many(store, keys, HEAD_CONCURRENCY, errors)
        act_on = []
        for item in items:
            reason = None
            if item.key in errors:
                result.failed.append(Failure(rule.id, tier, item.key, errors[item.key].message))
                continue
            if item.key in referenced:
                reason = "referenced at sweep time"
            elif item.key in protected:
                reason = "pinned or leased"
            elif item.key not in current:
                await asyncio.to_thread(self.catalog.forget, tier, [item.key])
                reason = "already gone"
            elif current[item.key] != (item.size, item.etag):
                reason = "changed since it was marked"
            if reason:
                result.skipped.append(Skip(rule.id, tier, item.key, reason))
            else:
                act_on.append(item)
        if not act_on:
            return
        if rule.mode == "quarantine":
            await self._quarantine(rule, tier, store, act_on, now, result)
            return
        try:
            await store.delete_many([item.key for item in act_on])
        except ShelflifeError as exc:
            result.failed += [Failure(rule.id, tier, item.key, exc.message) for item in act_on]
            return
        await asyncio.to_thread(self.catalog.forget, tier, [item.key for item in act_on])
        result.actions += [Action("delete-orphan", rule.id, tier, i.key, i.size) for i in act_on]

    async def _quarantine(
        self,
        rule: RuleConfig,
        tier: str,
        store: ObstoreStore,
        items: list[Any],
        now: datetime,
        result: SweepResult,
    ) -> None:
        expires = now + timedelta(days=rule.quarantine_days)
        for item in items:
            trash = trash_key(item.key, now)
            try:
                copied = await transfer(store, item.key, store, trash, overwrite=False)
                if copied.size != item.size:
                    raise ShelflifeError(f"the trash copy of {item.key} has the wrong size")
                await asyncio.to_thread(
                    self.ledger.add_quarantine, tier, item.key, trash, item.size, now, expires
                )
                # The trash copy occupies the tier until purged: the inventory says so.
                await asyncio.to_thread(
                    self.catalog.record_put,
                    tier,
                    trash,
                    size=copied.size,
                    checksum=copied.checksum,
                    etag=copied.etag,
                    now=now,
                )
                await store.delete(item.key)
            except ShelflifeError as exc:
                result.failed.append(Failure(rule.id, tier, item.key, exc.message))
                continue
            await asyncio.to_thread(self.catalog.forget, tier, [item.key])
            result.actions.append(Action("quarantine", rule.id, tier, item.key, item.size))

    def _still_referenced(self, tier: str, keys: list[str]) -> set[str]:
        """Keys some row names right now, by any spelling (see Ledger's rule)."""
        return still_referenced(self.sources, self.locator, self.catalog, tier, keys)

    # -- quarantine upkeep -------------------------------------------------------------------

    async def purge_quarantine(self, now: datetime) -> list[Action]:
        """Delete quarantined objects whose time is up."""
        purged = []
        for entry in await asyncio.to_thread(self.ledger.expired_quarantine, now):
            store = self.store(entry.tier)
            await store.delete(entry.trash_key)
            await asyncio.to_thread(self.catalog.forget, entry.tier, [entry.trash_key])
            await asyncio.to_thread(self.ledger.set_quarantine_state, entry.id, "purged")
            purged.append(
                Action("purge-quarantine", "quarantine", entry.tier, entry.key, entry.size)
            )
        return purged


def still_referenced(
    sources: Sequence[ReferenceSource],
    locator: Locator,
    catalog: Catalog,
    tier: str,
    keys: Sequence[str],
) -> set[str]:
    """The keys of ``tier`` some row of ``sources`` names right now: on this tier, as a
    bare key, or on another tier that lacks the key (the row would resolve here)."""
    found: set[str] = set()
    bare = set(locator.bare_tiers)
    for source in sources:
        for location in source.naming(keys):
            if location.key in found:
                continue
            if (
                location.tier == tier
                or location.tier in bare
                or catalog.get(location.tier, location.key) is None
            ):
                found.add(location.key)
    return found


def _order(location: Location) -> tuple[str, str]:
    return (location.tier, location.key)


def _undeclared_reason(finding: UndeclaredColumn) -> str:
    return (
        f"column {finding.label} holds values that point at objects of tier "
        f"{', '.join(finding.tiers)} (e.g. {finding.example[:120]!r}), but no [[references]] "
        f"entry names it. Declare it:\n{finding.declaration()}\nor, if it names no object, "
        "list it under [[ignore_columns]] with a reason"
    )
