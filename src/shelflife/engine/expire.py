"""Expiration: delete objects that outlived their retention, and deal with their rows.

Per batch of planned expirations, in this order:

1. Re-check each object: still there with the size and ETag it was planned with, not
   pinned, not under an upload lease, and named by no row of a reference whose
   ``on_expire`` is ``block``. Anything else is skipped with the reason.
2. The rows: each ``null`` source sets the column to NULL, each ``delete-row`` source
   deletes the row, for every spelling that resolves to the object (one statement per
   batch and source, in one transaction per source).
3. Check every source once more: a row written meanwhile keeps the object (skipped).
4. Delete the objects and forget them in the catalog.

A crash between 2 and 4 leaves an object no row points at (an orphan, collected later),
never a row pointing at nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shelflife.base.faults import checkpoint
from shelflife.catalog import Catalog
from shelflife.catalog.ledger import Ledger
from shelflife.config.model import Config
from shelflife.errors import ShelflifeError
from shelflife.model.actions import Action, Failure, Skip
from shelflife.model.locations import Location, Locator
from shelflife.references.sources import ReferenceSource, SourceUnreadable
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.transfer import head_many


@dataclass
class ExpireResult:
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # rows changed per source label


class Expirer:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        ledger: Ledger,
        locator: Locator,
        sources: list[ReferenceSource],
        store: Callable[[str], ObstoreStore],
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.ledger = ledger
        self.locator = locator
        self.sources = sources
        self.store = store

    def resolves_here(self, tier: str, keys: Sequence[str]) -> Callable[[Location], bool]:
        """Whether a location a row names resolves to the object on ``tier``: it names the
        key there, or on another tier that lacks the key."""
        others = [name for name in self.config.tiers if name != tier]
        present = self.catalog.present((other, key) for other in others for key in keys)
        wanted = set(keys)

        def here(location: Location) -> bool:
            if location.key not in wanted:
                return False
            return location.tier == tier or (location.tier, location.key) not in present

        return here

    def _named_by(
        self, sources: Sequence[ReferenceSource], tier: str, keys: Sequence[str]
    ) -> set[str]:
        here = self.resolves_here(tier, keys)
        named: set[str] = set()
        for source in sources:
            named |= {loc.key for loc in source.naming(keys) if here(loc)}
        return named

    async def expire(
        self, tier: str, items: Sequence[Action], now: datetime, result: ExpireResult
    ) -> None:
        """Expire one batch of planned actions on ``tier``."""
        store = self.store(tier)
        keys = [item.key for item in items]
        errors: dict[str, ShelflifeError] = {}
        heads = await head_many(store, keys, errors=errors)
        protected = await asyncio.to_thread(self.ledger.protected_keys, tier, keys, now)
        blocking = [s for s in self.sources if s.config.on_expire == "block"]
        changing = [s for s in self.sources if s.config.on_expire != "block"]
        try:
            blocked = await asyncio.to_thread(self._named_by, blocking, tier, keys)
        except SourceUnreadable:
            raise  # the run stops: no reference can be verified any more
        except ShelflifeError as exc:
            result.failed += [Failure(i.rule, tier, i.key, exc.message) for i in items]
            return
        chosen: list[Action] = []
        for item in items:
            head = heads.get(item.key)
            reason = None
            if item.key in errors:
                result.failed.append(Failure(item.rule, tier, item.key, errors[item.key].message))
                continue
            if head is None:
                await asyncio.to_thread(self.catalog.forget, tier, [item.key])
                reason = "already gone"
            elif head[0] != item.bytes or (item.etag is not None and head[1] != item.etag):
                reason = "changed since it was planned"
            elif item.key in protected:
                reason = "pinned or leased"
            elif item.key in blocked:
                reason = "referenced by a reference with on_expire = block"
            if reason:
                result.skipped.append(Skip(item.rule, tier, item.key, reason))
            else:
                chosen.append(item)
        if not chosen:
            return
        chosen_keys = [item.key for item in chosen]
        here = await asyncio.to_thread(self.resolves_here, tier, chosen_keys)
        try:
            for source in changing:
                changed = await asyncio.to_thread(source.expire_rows, here, chosen_keys)
                result.rows[source.label] = result.rows.get(source.label, 0) + changed
            checkpoint("expire-rows")
            # A row written since (any source) keeps its object.
            again = await asyncio.to_thread(self._named_by, self.sources, tier, chosen_keys)
        except SourceUnreadable:
            raise  # rows may have changed, no object was deleted; the run stops
        except ShelflifeError as exc:
            result.failed += [Failure(i.rule, tier, i.key, exc.message) for i in chosen]
            return
        final = [item for item in chosen if item.key not in again]
        result.skipped += [
            Skip(i.rule, tier, i.key, "referenced again at delete time")
            for i in chosen
            if i.key in again
        ]
        if not final:
            return
        try:
            await store.delete_many([item.key for item in final])
        except ShelflifeError as exc:
            result.failed += [Failure(i.rule, tier, i.key, exc.message) for i in final]
            return
        await asyncio.to_thread(self.catalog.forget, tier, [item.key for item in final])
        result.actions += [
            Action(
                "expire",
                item.rule,
                tier,
                item.key,
                item.bytes,
                rows=item.rows,
                age=item.age,
                aged_from=item.aged_from,
            )
            for item in final
        ]
