"""Collecting orphans a plan selected: each batch re-checked at sweep time, then deleted
or moved under the trash prefix.

What the planner selected (objects no reference snapshot names, past the rule's grace,
not pinned or leased) is re-checked per batch just before it goes: the references (each
source queried for every spelling of the batch's keys), pins and leases, and the object
itself (a HEAD: it must still be the object that was planned). Only then is it deleted,
or, with ``mode = "quarantine"``, moved under the trash prefix for ``quarantine_days``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shelflife.base.faults import checkpoint
from shelflife.catalog.ledger import trash_key
from shelflife.config.model import RuleConfig
from shelflife.engine.context import Context
from shelflife.engine.trust import still_referenced
from shelflife.errors import ShelflifeError
from shelflife.model.actions import Action, ActionKind, Failure, Skip
from shelflife.references.sources import ReferenceSource
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.transfer import head_many, transfer

HEAD_CONCURRENCY = 32


@dataclass
class SweepResult:
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


class Collector:
    """Sweeps planned orphans for one context."""

    def __init__(self, context: Context, sources: Sequence[ReferenceSource]) -> None:
        self.context = context
        self.sources = sources

    async def sweep(
        self, rule: RuleConfig, tier: str, items: Sequence[Action], now: datetime
    ) -> SweepResult:
        """Re-check and collect one batch of planned orphans of ``rule`` on ``tier``."""
        result = SweepResult()
        context = self.context
        store = context.store(tier)
        keys = [item.key for item in items]
        checkpoint("sweep-batch")
        referenced = await asyncio.to_thread(
            still_referenced, self.sources, context.locator, context.catalog, tier, keys
        )
        protected = await asyncio.to_thread(context.ledger.protected_keys, tier, keys, now)
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
                await asyncio.to_thread(context.catalog.forget, tier, [item.key])
                reason = "already gone"
            elif current[item.key] != (item.bytes, item.etag):
                reason = "changed since it was planned"
            if reason:
                result.skipped.append(Skip(rule.id, tier, item.key, reason))
            else:
                act_on.append(item)
        if not act_on:
            return result
        if rule.mode == "quarantine":
            await self._quarantine(rule, tier, store, act_on, now, result)
            return result
        try:
            await store.delete_many([item.key for item in act_on])
        except ShelflifeError as exc:
            result.failed += [Failure(rule.id, tier, item.key, exc.message) for item in act_on]
            return result
        await asyncio.to_thread(context.catalog.forget, tier, [item.key for item in act_on])
        result.actions += [
            Action(
                ActionKind.DELETE_ORPHAN,
                rule.id,
                tier,
                i.key,
                i.bytes,
                age=i.age,
                aged_from=i.aged_from,
            )
            for i in act_on
        ]
        return result

    async def _quarantine(
        self,
        rule: RuleConfig,
        tier: str,
        store: ObstoreStore,
        items: list[Action],
        now: datetime,
        result: SweepResult,
    ) -> None:
        context = self.context
        expires = now + timedelta(days=rule.quarantine_days)
        for item in items:
            trash = trash_key(item.key, now)
            try:
                copied = await transfer(store, item.key, store, trash, overwrite=False)
                if copied.size != item.bytes:
                    raise ShelflifeError(f"the trash copy of {item.key} has the wrong size")
                await asyncio.to_thread(
                    context.ledger.add_quarantine, tier, item.key, trash, item.bytes, now, expires
                )
                # The trash copy occupies the tier until purged: the inventory says so.
                await asyncio.to_thread(
                    context.catalog.record_put,
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
            await asyncio.to_thread(context.catalog.forget, tier, [item.key])
            result.actions.append(
                Action(
                    ActionKind.QUARANTINE,
                    rule.id,
                    tier,
                    item.key,
                    item.bytes,
                    age=item.age,
                    aged_from=item.aged_from,
                )
            )


async def purge_quarantine(context: Context, now: datetime) -> list[Action]:
    """Delete quarantined objects whose time is up."""
    purged = []
    for entry in await asyncio.to_thread(context.ledger.expired_quarantine, now):
        store = context.store(entry.tier)
        await store.delete(entry.trash_key)
        await asyncio.to_thread(context.catalog.forget, entry.tier, [entry.trash_key])
        await asyncio.to_thread(context.ledger.set_quarantine_state, entry.id, "purged")
        purged.append(
            Action(ActionKind.PURGE_QUARANTINE, "quarantine", entry.tier, entry.key, entry.size)
        )
    return purged
