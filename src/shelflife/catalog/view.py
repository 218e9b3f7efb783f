"""The catalog as the planner's inventory: objects streamed in a rule's order, each with
its pins, leases and the reference sources that name it (from the latest snapshot)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.ledger import Ledger, coldest_first, live_in, selection_clauses
from shelflife.catalog.schema import leases, objects, pins, refs

BATCH = 1000


@dataclass(frozen=True, slots=True)
class ObjectView:
    """What the planner knows about one object."""

    key: str
    size: int
    modified: datetime
    accessed: datetime | None = None
    etag: str | None = None
    tags: Mapping[str, str] | None = None
    pinned: bool = False
    leased: bool = False
    refs: frozenset[int] = frozenset()  # positions under [[references]] of sources naming it


@dataclass(frozen=True, slots=True)
class TierState:
    """A tier's usage as the planner starts."""

    name: str
    used: int = 0  # bytes counted against capacity
    capacity: int | None = None
    high: float = 0.8
    low: float = 0.7
    objects: int = 0  # live objects, for max_fraction
    versioned: bool = False


@dataclass(frozen=True, slots=True)
class Selection:
    """What a rule asks of a tier; an inventory may use it to narrow what it yields.

    The planner checks every condition itself, so an inventory may ignore any of them.
    """

    prefix: str | None = None
    suffix: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    modified_before: datetime | None = None
    unreferenced: bool = False


class CatalogInventory:
    """The planner's ``Inventory`` over the catalog."""

    def __init__(
        self,
        engine: Engine,
        tiers: Mapping[str, TierState],
        *,
        snapshot_id: int | None,
        now: datetime,
        batch_size: int = BATCH,
    ) -> None:
        self.engine = engine
        self.tiers = tiers
        self.snapshot_id = snapshot_id
        self.now = now
        self.batch_size = batch_size
        self.ledger = Ledger(engine)
        self._any_protection: bool | None = None

    def tier(self, name: str) -> TierState:
        return self.tiers[name]

    def objects(self, tier: str, order: str, selection: Selection) -> Iterator[ObjectView]:
        clauses: list[Any] = [*live_in(tier), *selection_clauses(selection)]
        if selection.modified_before is not None:
            clauses.append(objects.c.modified_at < selection.modified_before)
        if selection.unreferenced and self.snapshot_id is not None:
            clauses.append(~self.ledger.referenced_clause(self.snapshot_id))
        sort_key = coldest_first(order)
        query = (
            select(
                objects.c.key,
                objects.c.size,
                objects.c.modified_at,
                objects.c.last_accessed_at,
                objects.c.etag,
                objects.c.tags,
            )
            .where(*clauses)
            .order_by(sort_key, objects.c.key)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=self.batch_size).execute(
                query
            )
            for rows in result.partitions(self.batch_size):
                keys = [row.key for row in rows]
                pinned, leased = self._protection(tier, keys)
                named = self._sources_naming(tier, keys)
                for row in rows:
                    yield ObjectView(
                        key=row.key,
                        size=row.size,
                        modified=row.modified_at,
                        accessed=row.last_accessed_at,
                        etag=row.etag,
                        tags=json.loads(row.tags) if row.tags else None,
                        pinned=row.key in pinned,
                        leased=row.key in leased,
                        refs=frozenset(named.get(row.key, ())),
                    )

    def _protection(self, tier: str, keys: list[str]) -> tuple[set[str], set[str]]:
        if self._any_protection is None:  # most catalogs hold no pin or live lease at all
            with _Guard(self.engine, begin=False) as conn:
                any_pin = conn.execute(select(pins.c.key).limit(1)).first()
                any_lease = conn.execute(
                    select(leases.c.key).where(leases.c.expires_at > self.now).limit(1)
                ).first()
            self._any_protection = any_pin is not None or any_lease is not None
        if not self._any_protection:
            return set(), set()
        with _Guard(self.engine, begin=False) as conn:
            pinned = conn.execute(
                select(pins.c.key).where(
                    pins.c.tier == tier,
                    pins.c.key.in_(keys),
                    or_(pins.c.until.is_(None), pins.c.until > self.now),
                )
            )
            pinned_keys = {row[0] for row in pinned}
            leased = conn.execute(
                select(leases.c.key).where(
                    leases.c.tier == tier, leases.c.key.in_(keys), leases.c.expires_at > self.now
                )
            )
            return pinned_keys, {row[0] for row in leased}

    def _sources_naming(self, tier: str, keys: list[str]) -> dict[str, set[int]]:
        """Per key, the sources whose rows name it on ``tier``, or name it on a tier that
        lacks it (the row would resolve here): the same rule as orphan marking."""
        if self.snapshot_id is None:
            return {}
        named: dict[str, set[int]] = {}
        elsewhere: list[tuple[str, str, int]] = []
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(refs.c.key, refs.c.tier, refs.c.source).where(
                    refs.c.snapshot_id == self.snapshot_id, refs.c.key.in_(keys)
                )
            ).all()
            for key, ref_tier, source in rows:
                index = -1 if source is None else int(source)
                if ref_tier == tier:
                    named.setdefault(key, set()).add(index)
                else:
                    elsewhere.append((key, ref_tier, index))
            if elsewhere:
                present = {
                    (row.tier, row.key)
                    for row in conn.execute(
                        select(objects.c.tier, objects.c.key).where(
                            objects.c.key.in_({key for key, _, _ in elsewhere}),
                            objects.c.state == "present",
                        )
                    )
                }
                for key, ref_tier, index in elsewhere:
                    if (ref_tier, key) not in present:
                        named.setdefault(key, set()).add(index)
        return named
