"""Catalog records for references and orphan collection.

A *reference snapshot* is every location the reference sources named at one instant,
copied into the catalog in batches; orphans are found by an anti-join against it inside
the catalog database, which needs no sort order shared with any store and no memory in
shelflife beyond one batch. Pins, upload leases and quarantine entries live here too.

An object (tier T, key K) counts as referenced when a snapshot row names (T, K), or names
K on another tier T' whose inventory lacks K: :meth:`Shelf.resolve` would follow such a
row to T, so it must protect what it would find.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import (
    bulk_execute,
    leases,
    objects,
    pins,
    quarantine,
    ref_snapshots,
    refs,
)
from shelflife.model.locations import Location
from shelflife.model.selection import TRASH_PREFIX

INSERT_BATCH = 5000


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    id: int
    tier: str
    key: str
    trash_key: str
    size: int
    quarantined_at: datetime
    expires_at: datetime
    state: str


@dataclass(frozen=True, slots=True)
class ReferenceCounts:
    referenced_objects: int
    orphan_objects: int
    orphan_bytes: int


def live_in(tier: str) -> list[ColumnElement[bool]]:
    """Objects present on ``tier``, quarantine copies left out."""
    return [
        objects.c.tier == tier,
        objects.c.state == "present",
        not_(objects.c.key.startswith(TRASH_PREFIX + "/", autoescape=True)),
    ]


def selection_clauses(selection: Any) -> list[ColumnElement[bool]]:
    """A rule filter's prefix, suffix and size bounds (attributes of ``selection``)."""
    clauses: list[ColumnElement[bool]] = []
    if selection.prefix:
        clauses.append(objects.c.key.startswith(selection.prefix, autoescape=True))
    if selection.suffix:
        clauses.append(objects.c.key.endswith(selection.suffix, autoescape=True))
    if selection.min_size is not None:
        clauses.append(objects.c.size >= selection.min_size)
    if selection.max_size is not None:
        clauses.append(objects.c.size <= selection.max_size)
    return clauses


def aged_from_column(basis: str) -> Any:
    """The column expression of :func:`shelflife.model.selection.aged_from`."""
    if basis == "created":
        return func.coalesce(objects.c.created_at, objects.c.modified_at)
    if basis == "arrived":
        return func.coalesce(objects.c.arrived_at, objects.c.modified_at)
    if basis == "last-access":
        return func.coalesce(objects.c.last_accessed_at, objects.c.modified_at)
    return objects.c.modified_at


def coldest_first(order: str) -> Any:
    """The sort expression of a migrate rule's ``order`` (ties go by key, added by callers)."""
    if order == "largest":
        return -objects.c.size
    if order == "least-recently-used":
        return func.coalesce(objects.c.last_accessed_at, objects.c.modified_at)
    return objects.c.modified_at


def trash_key(key: str, now: datetime) -> str:
    return f"{TRASH_PREFIX}/{now:%Y%m%dT%H%M%S%f}/{key}"


class Ledger:
    """Reference snapshots, pins, leases, marks and quarantine in the catalog."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _begin(self) -> Any:
        return _Guard(self.engine, begin=True)

    def _connect(self) -> Any:
        return _Guard(self.engine, begin=False)

    # -- reference snapshots ---------------------------------------------------------------

    def begin_snapshot(self, now: datetime) -> int:
        with self._begin() as conn:
            result = conn.execute(insert(ref_snapshots).values(taken_at=now, status="building"))
            return int(result.inserted_primary_key[0])

    def add_refs(
        self, snapshot_id: int, locations: Sequence[Location], source: int | None = None
    ) -> None:
        rows = [
            {"snapshot_id": snapshot_id, "tier": loc.tier, "key": loc.key, "source": source}
            for loc in locations
        ]
        with self._begin() as conn:
            for start in range(0, len(rows), INSERT_BATCH):
                bulk_execute(conn, insert(refs), rows[start : start + INSERT_BATCH])

    def finish_snapshot(
        self, snapshot_id: int, *, rows: int, unmatched: int, now: datetime
    ) -> None:
        """Make the snapshot current and drop every older one."""
        with self._begin() as conn:
            conn.execute(
                update(ref_snapshots)
                .where(ref_snapshots.c.id == snapshot_id)
                .values(status="ok", finished_at=now, rows=rows, unmatched=unmatched)
            )
            older = select(ref_snapshots.c.id).where(ref_snapshots.c.id < snapshot_id)
            conn.execute(delete(refs).where(refs.c.snapshot_id.in_(older)))
            conn.execute(delete(ref_snapshots).where(ref_snapshots.c.id < snapshot_id))

    def fail_snapshot(self, snapshot_id: int) -> None:
        with self._begin() as conn:
            conn.execute(delete(refs).where(refs.c.snapshot_id == snapshot_id))
            conn.execute(delete(ref_snapshots).where(ref_snapshots.c.id == snapshot_id))

    def latest_snapshot(self) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = (
                conn.execute(
                    select(ref_snapshots)
                    .where(ref_snapshots.c.status == "ok")
                    .order_by(ref_snapshots.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    # -- orphans ---------------------------------------------------------------------------

    def referenced_clause(self, snapshot_id: int) -> ColumnElement[bool]:
        r = refs.alias("r")
        other = objects.alias("other")
        elsewhere_missing = ~exists().where(other.c.tier == r.c.tier, other.c.key == r.c.key)
        return exists().where(
            r.c.snapshot_id == snapshot_id,
            r.c.key == objects.c.key,
            or_(r.c.tier == objects.c.tier, elsewhere_missing),
        )

    def _protected(self, now: datetime) -> ColumnElement[bool]:
        pinned = exists().where(
            pins.c.tier == objects.c.tier,
            pins.c.key == objects.c.key,
            or_(pins.c.until.is_(None), pins.c.until > now),
        )
        leased = exists().where(
            leases.c.tier == objects.c.tier,
            leases.c.key == objects.c.key,
            leases.c.expires_at > now,
        )
        return or_(pinned, leased)

    def reference_counts(self, snapshot_id: int) -> dict[str, ReferenceCounts]:
        """Referenced and orphaned objects (and orphan bytes) per tier, grace ignored."""
        referenced = case((self.referenced_clause(snapshot_id), 1), else_=0)
        live = and_(
            objects.c.state == "present",
            not_(objects.c.key.startswith(TRASH_PREFIX + "/", autoescape=True)),
        )
        query = (
            select(
                objects.c.tier,
                func.sum(referenced),
                func.count(),
                func.sum(objects.c.size),
                func.sum(referenced * objects.c.size),
            )
            .where(live)
            .group_by(objects.c.tier)
        )
        with self._connect() as conn:
            rows = conn.execute(query).all()
        counts = {}
        for tier, ref_count, total, size, ref_bytes in rows:
            ref_count, size, ref_bytes = int(ref_count or 0), int(size or 0), int(ref_bytes or 0)
            counts[tier] = ReferenceCounts(ref_count, int(total) - ref_count, size - ref_bytes)
        return counts

    def objects_in_tier(self, tier: str) -> int:
        with self._connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        objects.c.tier == tier,
                        not_(objects.c.key.startswith(TRASH_PREFIX + "/", autoescape=True)),
                    )
                ).scalar_one()
            )

    # -- pins and leases -------------------------------------------------------------------

    def pin(self, tier: str, key: str, until: datetime | None, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(delete(pins).where(pins.c.tier == tier, pins.c.key == key))
            conn.execute(insert(pins).values(tier=tier, key=key, until=until, created_at=now))

    def unpin(self, tier: str, key: str) -> bool:
        with self._begin() as conn:
            return bool(
                conn.execute(delete(pins).where(pins.c.tier == tier, pins.c.key == key)).rowcount
            )

    def pins(self) -> list[tuple[str, str, datetime | None]]:
        with self._connect() as conn:
            rows = conn.execute(select(pins.c.tier, pins.c.key, pins.c.until)).all()
        return [(row.tier, row.key, row.until) for row in rows]

    def acquire_lease(self, tier: str, key: str, expires_at: datetime) -> int:
        with self._begin() as conn:
            result = conn.execute(insert(leases).values(tier=tier, key=key, expires_at=expires_at))
            return int(result.inserted_primary_key[0])

    def release_lease(self, lease_id: int) -> None:
        with self._begin() as conn:
            conn.execute(delete(leases).where(leases.c.id == lease_id))

    def protected_keys(self, tier: str, keys: Sequence[str], now: datetime) -> set[str]:
        """Which of ``keys`` are pinned or leased right now."""
        found: set[str] = set()
        with self._connect() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                found.update(
                    conn.execute(
                        select(pins.c.key).where(
                            pins.c.tier == tier,
                            pins.c.key.in_(chunk),
                            or_(pins.c.until.is_(None), pins.c.until > now),
                        )
                    ).scalars()
                )
                found.update(
                    conn.execute(
                        select(leases.c.key).where(
                            leases.c.tier == tier,
                            leases.c.key.in_(chunk),
                            leases.c.expires_at > now,
                        )
                    ).scalars()
                )
        return found

    def purge_expired_leases(self, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(delete(leases).where(leases.c.expires_at <= now))

    # -- quarantine ------------------------------------------------------------------------

    def add_quarantine(
        self, tier: str, key: str, trash: str, size: int, now: datetime, expires_at: datetime
    ) -> None:
        with self._begin() as conn:
            conn.execute(
                insert(quarantine).values(
                    tier=tier,
                    key=key,
                    trash_key=trash,
                    size=size,
                    quarantined_at=now,
                    expires_at=expires_at,
                    state="held",
                )
            )

    def quarantined_totals(self) -> dict[str, tuple[int, int]]:
        """Objects and bytes held in quarantine per tier."""
        with self._connect() as conn:
            rows = conn.execute(
                select(
                    quarantine.c.tier, func.count(), func.coalesce(func.sum(quarantine.c.size), 0)
                )
                .where(quarantine.c.state == "held")
                .group_by(quarantine.c.tier)
            ).all()
        return {tier: (int(count), int(size)) for tier, count, size in rows}

    def find_quarantined(self, key: str, tier: str | None = None) -> QuarantineEntry | None:
        query = select(quarantine).where(quarantine.c.key == key, quarantine.c.state == "held")
        if tier:
            query = query.where(quarantine.c.tier == tier)
        with self._connect() as conn:
            row = conn.execute(query.order_by(quarantine.c.id.desc()).limit(1)).first()
        return QuarantineEntry(*row) if row else None

    def expired_quarantine(self, now: datetime) -> list[QuarantineEntry]:
        with self._connect() as conn:
            rows = conn.execute(
                select(quarantine).where(
                    quarantine.c.state == "held", quarantine.c.expires_at <= now
                )
            ).all()
        return [QuarantineEntry(*row) for row in rows]

    def set_quarantine_state(self, entry_id: int, state: str) -> None:
        with self._begin() as conn:
            conn.execute(update(quarantine).where(quarantine.c.id == entry_id).values(state=state))
