"""Plans' items in the catalog: written as they are planned, read back in batches.

A plan of a million actions passes through memory a thousand rows at a time, whether it
is being built, executed, shown or exported. Items of older plans are pruned when a new
plan is saved (the newest :data:`KEEP` plans keep theirs, and so do a plan being built and
a plan a running run applies), and an applied plan's items go once its run is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import Engine, delete, func, select

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import bulk_insert, plan_items, plans, runs, to_micros
from shelflife.model.actions import Action, Skip

BATCH = 1000  # rows read back at a time
# Rows written per transaction: each commit rewrites the B-tree pages the batch touched
# (the table's last page, its keys' and the (plan, tier, key) index's), so fewer, larger
# commits write each page once; 20,000 rows are a few MiB held in memory.
WRITE_BATCH = 20_000
KEEP = 20  # plans whose items are kept for review and apply
# The columns of a plan item as PlanStore writes them, in this order.
_ITEM_COLUMNS = (
    "plan_id",
    "seq",
    "kind",
    "action",
    "rule",
    "tier",
    "key",
    "bytes",
    "to_tier",
    "etag",
    "modified_at",
    "rows",
    "reason",
    "age",
    "aged_from",
)


class PlanStore:
    """The items of one plan (implements :class:`shelflife.model.plan.PlanItems`)."""

    def __init__(
        self,
        engine: Engine,
        plan_id: str,
        batch_size: int = BATCH,
        write_batch: int = WRITE_BATCH,
    ) -> None:
        self.engine = engine
        self.plan_id = plan_id
        self.batch_size = batch_size
        self.write_batch = write_batch
        self._pending: list[tuple[Any, ...]] = []
        self._seq = 0

    # -- writing ----------------------------------------------------------------------------

    def add_action(self, action: Action) -> None:
        modified, aged_from = action.modified, action.aged_from
        self._add(
            (
                "action",
                str(action.action),
                action.rule,
                action.tier,
                action.key,
                action.bytes,
                action.to,
                action.etag,
                None if modified is None else to_micros(modified),
                None if action.rows is None else json.dumps(action.rows),
                None,
                action.age,
                None if aged_from is None else to_micros(aged_from),
            )
        )

    def add_skip(self, skip: Skip) -> None:
        self._add(
            (
                "skip",
                None,
                skip.rule,
                skip.tier,
                skip.key,
                None,
                None,
                None,
                None,
                None,
                skip.reason[:2000],
                None,
                None,
            )
        )

    def _add(self, row: tuple[Any, ...]) -> None:
        self._seq += 1
        self._pending.append((self.plan_id, self._seq, *row))
        if len(self._pending) >= self.write_batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with _Guard(self.engine, begin=True) as conn:
            bulk_insert(conn, plan_items, self._pending, _ITEM_COLUMNS)
        self._pending = []

    def discard(self, rule: str, tier: str) -> None:
        self.flush()
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(
                delete(plan_items).where(
                    plan_items.c.plan_id == self.plan_id,
                    plan_items.c.kind == "action",
                    plan_items.c.rule == rule,
                    plan_items.c.tier == tier,
                )
            )

    # -- reading ----------------------------------------------------------------------------

    def actions(self, kinds: Collection[str] | None = None) -> Iterator[Action]:
        for row in self._rows("action", kinds):
            yield Action(
                row.action,
                row.rule,
                row.tier,
                row.key,
                int(row.bytes or 0),
                to=row.to_tier,
                etag=row.etag,
                modified=row.modified_at,
                rows=None if row.rows is None else json.loads(row.rows),
                age=row.age,
                aged_from=row.aged_from,
            )

    def skipped(self) -> Iterator[Skip]:
        for row in self._rows("skip", None):
            yield Skip(row.rule, row.tier, row.key, row.reason or "")

    def _rows(self, kind: str, kinds: Collection[str] | None) -> Iterator[Any]:
        """Rows of one kind in plan order, a batch per query (no cursor held open)."""
        after = 0
        while True:
            query = select(plan_items).where(
                plan_items.c.plan_id == self.plan_id,
                plan_items.c.kind == kind,
                plan_items.c.seq > after,
            )
            if kinds is not None:
                query = query.where(plan_items.c.action.in_(sorted(kinds)))
            with _Guard(self.engine, begin=False) as conn:
                rows = conn.execute(query.order_by(plan_items.c.seq).limit(self.batch_size)).all()
            yield from rows
            if len(rows) < self.batch_size:
                return
            after = rows[-1].seq

    # -- upkeep -----------------------------------------------------------------------------

    def drop(self) -> None:
        """Forget this plan's items (an applied plan needs them no more)."""
        self._pending = []
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(delete(plan_items).where(plan_items.c.plan_id == self.plan_id))


def prune(engine: Engine, keep: int = KEEP) -> None:
    """Drop the items of every plan but the newest ``keep``, a plan being built, and a
    plan a running run is applying."""
    with _Guard(engine, begin=True) as conn:
        newest = select(plans.c.id).order_by(plans.c.created_at.desc()).limit(keep)
        kept = {row[0] for row in conn.execute(newest)}
        kept |= {
            row[0] for row in conn.execute(select(plans.c.id).where(plans.c.status == "building"))
        }
        running = select(runs.c.id).where(runs.c.status == "running")
        applying = select(plans.c.id).where(plans.c.run_id.in_(running))
        kept |= {row[0] for row in conn.execute(applying)}
        conn.execute(delete(plan_items).where(plan_items.c.plan_id.not_in(sorted(kept))))


def count(engine: Engine, plan_id: str) -> int:
    """How many actions of a plan the catalog holds."""
    with _Guard(engine, begin=False) as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    plan_items.c.plan_id == plan_id, plan_items.c.kind == "action"
                )
            ).scalar_one()
        )
