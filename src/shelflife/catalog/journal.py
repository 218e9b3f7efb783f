"""The migration journal: every step of every object's move, written before it is taken.

Steps: ``copying`` → ``copied`` (verified at the destination) → ``repointing`` →
``deleting`` → ``done``; or ``failed`` / ``undone``. Recovery reads the unfinished
entries and completes or undoes each (see :mod:`shelflife.engine.migrate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import journal
from shelflife.stores.base import Stamps

UNFINISHED = ("copying", "copied", "repointing", "deleting")


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    run_id: str
    rule: str
    src_tier: str
    dst_tier: str
    key: str
    size: int
    checksum: str | None
    step: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """An object a migrate rule may move, with what its order is computed from."""

    key: str
    size: int
    modified_at: datetime
    last_accessed_at: datetime | None
    checksum: str | None
    # The instants the copy carries (DESIGN I9), when the caller has the inventory row
    # at hand; otherwise the migrator reads them.
    stamps: Stamps | None = None


_ENTRY_COLUMNS = (
    journal.c.id,
    journal.c.run_id,
    journal.c.rule,
    journal.c.src_tier,
    journal.c.dst_tier,
    journal.c.key,
    journal.c.size,
    journal.c.checksum,
    journal.c.step,
)


class Journal:
    """The journal of one catalog. ``fence``, when given, is called in the transaction of
    every step written (a run's lease check: :func:`shelflife.catalog.lock.lease_fence`)
    and refuses the step by raising."""

    def __init__(self, engine: Engine, fence: Callable[[Connection], None] | None = None) -> None:
        self.engine = engine
        self.fence = fence

    def begin(
        self,
        run_id: str,
        rule: str,
        src: str,
        dst: str,
        items: Sequence[tuple[str, int]],
        now: datetime,
    ) -> list[Entry]:
        """Journal ``copying`` for a batch, in one statement and one transaction, before
        any copy starts."""
        if not items:
            return []
        rows = [
            {
                "run_id": run_id,
                "rule": rule,
                "src_tier": src,
                "dst_tier": dst,
                "key": key,
                "size": size,
                "step": "copying",
                "created_at": now,
                "updated_at": now,
            }
            for key, size in items
        ]
        keys = [key for key, _ in items]
        with _Guard(self.engine, begin=True) as conn:
            if self.fence is not None:
                self.fence(conn)
            if conn.dialect.insert_executemany_returning and len(set(keys)) == len(keys):
                # One INSERT … VALUES (…), (…) RETURNING id, key: a batch's keys are
                # distinct, so each id is matched by its key (RETURNING keeps no order).
                statement = insert(journal).returning(journal.c.id, journal.c.key)
                by_key = {key: int(entry_id) for entry_id, key in conn.execute(statement, rows)}
                ids = [by_key[key] for key in keys]
            else:  # no multi-row RETURNING (or a key twice): one insert per row
                ids = [
                    int(conn.execute(insert(journal).values(**row)).inserted_primary_key[0])  # type: ignore[index]
                    for row in rows
                ]
        return [
            Entry(entry_id, run_id, rule, src, dst, key, size, None, "copying")
            for entry_id, (key, size) in zip(ids, items, strict=True)
        ]

    def advance(
        self,
        ids: Sequence[int],
        step: str,
        now: datetime,
        checksums: dict[int, str] | None = None,
        error: str | None = None,
        errors: dict[int, str] | None = None,
    ) -> None:
        """Move entries to ``step``, in one statement and one transaction: with a checksum
        each (``checksums``), or an error (one for all, or one each in ``errors``)."""
        if not ids:
            return
        with _Guard(self.engine, begin=True) as conn:
            if self.fence is not None:
                self.fence(conn)
            if checksums or errors:
                # One UPDATE executed for many rows (executemany): each its own value.
                column = "checksum" if checksums else "error"
                given = checksums or errors or {}
                statement = (
                    update(journal)
                    .where(journal.c.id == bindparam("entry_id"))
                    .values(step=step, updated_at=now, **{column: bindparam("value")})
                )
                conn.execute(
                    statement,
                    [
                        {
                            "entry_id": entry_id,
                            "value": _error(given.get(entry_id)) if errors else given.get(entry_id),
                        }
                        for entry_id in ids
                    ],
                )
            else:
                values: dict[str, Any] = {"step": step, "updated_at": now}
                if error is not None:
                    values["error"] = _error(error)
                conn.execute(update(journal).where(journal.c.id.in_(list(ids))).values(**values))

    def unfinished(
        self, run_id: str | None = None, keys: Sequence[str] | None = None
    ) -> list[Entry]:
        """Entries not done, failed or undone (of one run and some keys, if given)."""
        query = select(*_ENTRY_COLUMNS).where(journal.c.step.in_(UNFINISHED))
        if run_id is not None:
            query = query.where(journal.c.run_id == run_id)
        if keys is not None:
            query = query.where(journal.c.key.in_(list(keys)))
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(query.order_by(journal.c.id)).all()
        return [Entry(*row) for row in rows]

    def done_keys(self, run_id: str, tier: str, keys: Sequence[str]) -> set[str]:
        """Keys of ``tier`` a run has finished moving."""
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(journal.c.key).where(
                    journal.c.run_id == run_id,
                    journal.c.src_tier == tier,
                    journal.c.key.in_(list(keys)),
                    journal.c.step == "done",
                )
            )
            return {row[0] for row in rows}

    def counts(self, run_id: str) -> dict[str, int]:
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(journal.c.step, func.count())
                .where(journal.c.run_id == run_id)
                .group_by(journal.c.step)
            ).all()
        return {step: int(count) for step, count in rows}


def _error(message: str | None) -> str | None:
    return None if message is None else message[:1000]
