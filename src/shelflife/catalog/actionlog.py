"""The action log in the catalog: entries written in batches, read by keyset, pruned by age.

Every entry is one action taken, skipped or failed (see :mod:`shelflife.service.actionlog`
for what writes them). Entries are read oldest first by id, a page at a time and never
with a cursor held open, so an export of millions of entries passes through memory a
page at a time; they are pruned oldest first in bounded batches, each its own
transaction, so pruning never holds a lock for long.

Ids are visible in the order they were given, so a reader that continues ``after`` the
last id it saw misses nothing: SQLite has one writer at a time, and on PostgreSQL every
transaction that writes the log first takes the log's advisory lock
(``pg_advisory_xact_lock``, released at its commit), so no entry with a lower id can
commit after one with a higher id is seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, delete, func, select, text

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import action_log, bulk_upsert, to_micros
from shelflife.errors import CatalogError

WRITE_BATCH = 1000  # entries per INSERT batch
PRUNE_BATCH = 10_000  # entries per DELETE (one short transaction each)
PAGE = 1000  # entries per read when streaming
WRITER_KEY = 0x5E1F1106  # PostgreSQL: the advisory lock the log's writers take in turn

# The columns as :meth:`ActionLog.write` takes them, in this order.
COLUMNS = (
    "recorded_at",
    "run_id",
    "command",
    "rule",
    "action",
    "tier",
    "to_tier",
    "key",
    "bytes",
    "outcome",
    "reason",
    "age",
    "aged_from",
    "detail",
)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One action taken (``done``), ``skipped`` or ``failed``, as the log keeps it."""

    recorded_at: datetime
    command: str
    action: str
    tier: str
    key: str
    outcome: str
    run_id: str | None = None
    rule: str | None = None
    to: str | None = None
    bytes: int | None = None
    reason: str | None = None
    age: str | None = None
    aged_from: datetime | None = None
    detail: str | None = None
    id: int | None = None  # given by the catalog

    def row(self) -> tuple[Any, ...]:
        """The stored form, in :data:`COLUMNS` order."""
        return (
            to_micros(self.recorded_at),
            self.run_id,
            self.command[:32],
            None if self.rule is None else self.rule[:128],
            self.action[:32],
            self.tier,
            self.to,
            self.key,
            self.bytes,
            self.outcome,
            None if self.reason is None else self.reason[:2000],
            self.age,
            None if self.aged_from is None else to_micros(self.aged_from),
            None if self.detail is None else self.detail[:2000],
        )

    def as_json(self) -> dict[str, Any]:
        """One JSON object (a JSON line of the export); unset fields are null."""
        return {
            "id": self.id,
            "recorded_at": self.recorded_at.isoformat(),
            "run_id": self.run_id,
            "command": self.command,
            "rule": self.rule,
            "action": self.action,
            "tier": self.tier,
            "to": self.to,
            "key": self.key,
            "bytes": self.bytes,
            "outcome": self.outcome,
            "reason": self.reason,
            "age": self.age,
            "aged_from": None if self.aged_from is None else self.aged_from.isoformat(),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which entries to read: every field set narrows (``keys``: any of these keys)."""

    keys: tuple[str, ...] = ()
    rule: str | None = None
    run_id: str | None = None
    tier: str | None = None  # the tier acted on, or the destination of a move
    outcome: str | None = None
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before


class ActionLog:
    """The ``action_log`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing ----------------------------------------------------------------------------

    def write(self, entries: Iterable[LogEntry]) -> int:
        """Append entries, :data:`WRITE_BATCH` per statement (one transaction each)."""
        written = 0
        batch: list[tuple[Any, ...]] = []
        for entry in entries:
            batch.append(entry.row())
            if len(batch) == WRITE_BATCH:
                written += self._insert(batch)
                batch = []
        if batch:
            written += self._insert(batch)
        return written

    def _insert(self, rows: Sequence[tuple[Any, ...]]) -> int:
        try:
            with _Guard(self.engine, begin=True) as conn:
                append(conn, rows)
        except self.engine.dialect.loaded_dbapi.Error as exc:  # from COPY, not wrapped
            detail = (str(exc).strip().splitlines() or [repr(exc)])[0][:300]
            raise CatalogError(f"the action log could not be written: {detail}") from None
        return len(rows)

    # -- reading ----------------------------------------------------------------------------

    def page(
        self, chosen: LogFilter, *, after: int = 0, limit: int = 100, newest: bool = False
    ) -> list[LogEntry]:
        """Up to ``limit`` entries with ids above ``after``, oldest first (``newest``: the
        newest ``limit`` entries, still returned oldest first)."""
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(page_query(chosen, after, limit, newest)).all()
        entries = [_entry(row) for row in rows]
        return entries[::-1] if newest else entries

    def stream(
        self, chosen: LogFilter, *, after: int = 0, limit: int | None = None
    ) -> Iterator[LogEntry]:
        """Every matching entry above ``after``, oldest first, a page per query."""
        left = limit
        while left is None or left > 0:
            size = PAGE if left is None else min(PAGE, left)
            entries = self.page(chosen, after=after, limit=size)
            yield from entries
            if len(entries) < size:
                return
            after = entries[-1].id or after
            if left is not None:
                left -= len(entries)

    def count(self, chosen: LogFilter | None = None) -> int:
        query = _where(select(func.count()).select_from(action_log), chosen or LogFilter())
        with _Guard(self.engine, begin=False) as conn:
            return int(conn.execute(query).scalar_one())

    # -- upkeep -----------------------------------------------------------------------------

    def prune(
        self, before: datetime, *, batch: int = PRUNE_BATCH, budget: float | None = None
    ) -> tuple[int, bool]:
        """Delete entries recorded before ``before``, ``batch`` per transaction, for at
        most ``budget`` seconds (None: until none is left); return how many went and
        whether any older entry is left for the next time."""
        removed = 0
        started = time.monotonic()
        while True:
            # The oldest ``batch`` old ids, by the recorded_at index: one bounded DELETE.
            oldest = (
                select(action_log.c.id)
                .where(action_log.c.recorded_at < before)
                .order_by(action_log.c.recorded_at)
                .limit(batch)
                .scalar_subquery()
            )
            with _Guard(self.engine, begin=True) as conn:
                gone = conn.execute(delete(action_log).where(action_log.c.id.in_(oldest))).rowcount
            removed += gone
            if gone < batch:
                return removed, False
            if budget is not None and time.monotonic() - started >= budget:
                return removed, self._any_before(before)

    def _any_before(self, before: datetime) -> bool:
        query = select(action_log.c.id).where(action_log.c.recorded_at < before).limit(1)
        with _Guard(self.engine, begin=False) as conn:
            return conn.execute(query).first() is not None


def append(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert entries (rows in :data:`COLUMNS` order) in ``conn``'s transaction, which
    holds the writers' turn until it ends (see the module's docstring). PostgreSQL gets a
    large batch by COPY (see bulk_upsert), the others one compiled statement a batch."""
    if conn.dialect.name == "postgresql":
        # Ids come from a sequence as rows are inserted, and commit in any order: in turn,
        # a transaction's ids are all given and committed before the next one's are given.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITER_KEY})
    bulk_upsert(conn, action_log, rows, COLUMNS, lambda statement: statement)


def page_query(chosen: LogFilter, after: int, limit: int, newest: bool = False) -> Select[Any]:
    """The statement :meth:`ActionLog.page` reads a page with."""
    query = _where(select(action_log), chosen).where(action_log.c.id > after)
    order = action_log.c.id.desc() if newest else action_log.c.id
    return query.order_by(order).limit(limit)


def _where(query: Select[Any], chosen: LogFilter) -> Select[Any]:
    columns = action_log.c
    if chosen.keys:
        query = query.where(columns.key.in_(sorted(set(chosen.keys))))
    if chosen.rule is not None:
        query = query.where(columns.rule == chosen.rule)
    if chosen.run_id is not None:
        query = query.where(columns.run_id == chosen.run_id)
    if chosen.tier is not None:
        query = query.where((columns.tier == chosen.tier) | (columns.to_tier == chosen.tier))
    if chosen.outcome is not None:
        query = query.where(columns.outcome == chosen.outcome)
    if chosen.since is not None:
        query = query.where(columns.recorded_at >= chosen.since)
    if chosen.until is not None:
        query = query.where(columns.recorded_at < chosen.until)
    return query


def _entry(row: Any) -> LogEntry:
    return LogEntry(
        recorded_at=row.recorded_at,
        command=row.command,
        action=row.action,
        tier=row.tier,
        key=row.key,
        outcome=row.outcome,
        run_id=row.run_id,
        rule=row.rule,
        to=row.to_tier,
        bytes=row.bytes,
        reason=row.reason,
        age=row.age,
        aged_from=row.aged_from,
        detail=row.detail,
        id=int(row.id),
    )
