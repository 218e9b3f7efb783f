"""The catalog as the planner's inventory: objects streamed in a rule's order, each with
its pins, leases and the reference sources that name it.

Which sources name an object comes from one of two places: a *snapshot* of every
reference copied into the catalog (the general path: an anti-join in the database), or
the references themselves read in byte order (:class:`~shelflife.model.naming.Naming`)
and merged with the inventory read in key order — no copy at all. Rules that need to know
(expire, collect-orphans) take every object they select, so the merge reads their
candidates in key order whatever the rule's ``order``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Engine, exists, or_, select, type_coerce

from shelflife.catalog.catalog import Catalog, _Guard, in_key_order
from shelflife.catalog.ledger import (
    Ledger,
    aged_from_column,
    coldest_first,
    live_in,
    selection_clauses,
)
from shelflife.catalog.schema import (
    UTCDateTime,
    from_micros,
    leases,
    objects,
    pins,
    plan_items,
    refs,
)
from shelflife.errors import CatalogError
from shelflife.model.naming import Elsewhere, KeyOrderError, Names, Naming, merge_pages
from shelflife.model.selection import ObjectView, Selection, TierState

BATCH = 1000
_NONE: frozenset[int] = frozenset()


class CatalogInventory:
    """The planner's ``Inventory`` over the catalog."""

    def __init__(
        self,
        engine: Engine,
        tiers: Mapping[str, TierState],
        *,
        snapshot_id: int | None,
        now: datetime,
        plan_id: str | None = None,
        batch_size: int = BATCH,
        naming: Naming | None = None,
    ) -> None:
        self.engine = engine
        self.plan_id = plan_id
        # Objects the plan being built already holds (acted on or skipped by an earlier
        # rule) are left out here, in the database, rather than remembered by the planner.
        self.excludes_planned = plan_id is not None
        self.tiers = tiers
        self.snapshot_id = snapshot_id
        self.naming = naming  # the references in byte order (merge), instead of a snapshot
        self.now = now
        self.batch_size = batch_size
        self.ledger = Ledger(engine)
        self._any_protection: bool | None = None

    def tier(self, name: str) -> TierState:
        return self.tiers[name]

    def objects(self, tier: str, order: str, selection: Selection) -> Iterator[ObjectView]:
        clauses: list[Any] = [*live_in(tier), *selection_clauses(selection)]
        if selection.before is not None:
            clauses.append(aged_from_column(selection.age) < selection.before)
        if self.plan_id is not None and self._holds_items(tier):
            clauses.append(
                ~exists().where(
                    plan_items.c.plan_id == self.plan_id,
                    plan_items.c.tier == objects.c.tier,
                    plan_items.c.key == objects.c.key,
                )
            )
        if self.naming is not None and selection.named:
            yield from self._merged(tier, clauses, selection.unreferenced, self.naming)
            return
        if selection.unreferenced and self.snapshot_id is not None:
            clauses.append(~self.ledger.referenced_clause(self.snapshot_id))
        sort_key = coldest_first(order)
        query = select(*_VIEW_COLUMNS).where(*clauses).order_by(sort_key, objects.c.key)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=self.batch_size).execute(
                query
            )
            for rows in result.partitions(self.batch_size):
                keys = [row.key for row in rows]
                pinned, leased = self._protection(tier, keys)
                named = self._sources_naming(tier, keys)
                for row in rows:
                    yield _view(
                        row,
                        row.key in pinned,
                        row.key in leased,
                        frozenset(named.get(row.key, ())),
                    )

    def _merged(
        self, tier: str, clauses: list[Any], unreferenced: bool, naming: Naming
    ) -> Iterator[ObjectView]:
        """The tier's candidates in key order, merged with what the references name (see
        :func:`shelflife.model.naming.merge_pages`); with ``unreferenced`` only those no source
        names. A key named on another tier counts where that tier's inventory lacks it."""
        query = select(*_RAW_COLUMNS).where(*clauses).order_by(objects.c.key)
        with self.engine.connect() as conn:
            in_key_order(conn)
            result = conn.execution_options(stream_results=True, yield_per=self.batch_size).execute(
                query
            )
            pages = merge_pages(result.partitions(self.batch_size), tier, naming)
            try:
                for page, named, elsewhere in pages:
                    if elsewhere:
                        keep = self._named_here(page, named, elsewhere, unreferenced)
                    elif unreferenced:
                        keep = [(row, _NONE) for row in page if row[0] not in named]
                    else:
                        keep = [(row, frozenset(named.get(row[0], ()))) for row in page]
                    if not keep:
                        continue
                    pinned, leased = self._protection(tier, [row[0] for row, _ in keep])
                    for row, sources in keep:
                        key = row[0]
                        yield _raw_view(row, key in pinned, key in leased, sources)
            except KeyOrderError as exc:
                raise CatalogError(
                    f"the catalog's keys of tier {tier} are not in byte order ({exc}): "
                    "orphans cannot be told by merge, nothing was planned on them",
                    hint='the objects table must compare keys bytewise (COLLATE "C" on PostgreSQL)',
                ) from None

    def _named_here(
        self,
        page: Sequence[Any],
        named: Names,
        elsewhere: Elsewhere,
        unreferenced: bool,
    ) -> list[tuple[Any, frozenset[int]]]:
        """The rows of ``page`` to plan on, with the sources naming each: a key named on
        another tier counts where that tier's inventory lacks it."""
        wanted = {(other, row[0]) for row in page for other, _ in elsewhere.get(row[0], ())}
        present = Catalog(self.engine).present(wanted) if wanted else set()
        keep = []
        for row in page:
            key = row[0]
            sources = set(named.get(key, ()))
            for other, source in elsewhere.get(key, ()):
                if (other, key) not in present:
                    sources.add(source)
            if unreferenced and sources:
                continue
            keep.append((row, frozenset(sources)))
        return keep

    def _holds_items(self, tier: str) -> bool:
        """Whether the plan already holds items on ``tier`` (an earlier rule took some).

        On PostgreSQL the table's statistics are refreshed first: planned in the same run,
        its rows are unknown to the query planner, which would otherwise scan it once per
        object."""
        with _Guard(self.engine, begin=False) as conn:
            found = conn.execute(
                select(plan_items.c.seq)
                .where(plan_items.c.plan_id == self.plan_id, plan_items.c.tier == tier)
                .limit(1)
            ).first()
        if found is None:
            return False
        if self.engine.dialect.name == "postgresql":
            with _Guard(self.engine, begin=True) as conn:
                conn.exec_driver_sql("ANALYZE plan_items")
        return True

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


_VIEW_COLUMNS = (
    objects.c.key,
    objects.c.size,
    objects.c.modified_at,
    objects.c.last_accessed_at,
    objects.c.etag,
    objects.c.tags,
    objects.c.created_at,
    objects.c.arrived_at,
)


def _view(row: Any, pinned: bool, leased: bool, refs: frozenset[int]) -> ObjectView:
    return ObjectView(
        key=row.key,
        size=row.size,
        modified=row.modified_at,
        accessed=row.last_accessed_at,
        etag=row.etag,
        created=row.created_at,
        arrived=row.arrived_at,
        tags=json.loads(row.tags) if row.tags else None,
        pinned=pinned,
        leased=leased,
        refs=refs,
    )


# The same columns as stored: instants as integer microseconds, converted only for the
# rows a merge keeps (most of a tier is referenced and never reaches the planner).
_RAW_COLUMNS = tuple(
    type_coerce(column, BigInteger) if isinstance(column.type, UTCDateTime) else column
    for column in _VIEW_COLUMNS
)


def _raw_view(row: Any, pinned: bool, leased: bool, refs: frozenset[int]) -> ObjectView:
    key, size, modified_us, accessed_us, etag, tags, created_us, arrived_us = row
    modified = from_micros(modified_us)
    return ObjectView(
        key,
        size,
        modified,
        None if accessed_us is None else from_micros(accessed_us),
        etag,
        _instant(created_us, modified_us, modified),
        _instant(arrived_us, modified_us, modified),
        json.loads(tags) if tags else None,
        pinned,
        leased,
        refs,
    )


def _instant(value: int | None, modified_us: int, modified: datetime) -> datetime | None:
    """A stored instant, sharing the modification instant's object where they are equal
    (most objects were created and arrived when they were last modified)."""
    if value is None:
        return None
    return modified if value == modified_us else from_micros(value)
