"""Fanning a run's batches out to Celery workers (``[executor] backend = "celery"``).

The process that runs ``shelflife run`` (or the ``shelflife.run`` task) coordinates: it
holds the run lease for the whole run (renewed, :mod:`shelflife.catalog.lock`), plans,
and its dispatcher (:mod:`shelflife.service.dispatch`) sends the plan's batches to the workers
(``shelflife.execute_batch`` on ``[celery] batch_queue``), ``wave`` batches at a time so
that the error-fraction stop still applies; it waits for each wave, then reads every
action's outcome from the catalog's ``run_actions`` into the run record. This module is
the workers' side and the ledger both sides share; it never imports Celery.

A worker takes a batch only while its run holds the lease, and holds a ``lease_workers``
row while it does: a batch of a run whose coordinator died, or was taken over, is dropped,
and the run that takes over waits for the batches in progress.

A batch is idempotent, because tasks are acknowledged late and a batch whose worker died
is delivered again:

- an action already recorded ``done``, ``skipped`` or ``failed`` for this run is not taken
  again;
- an action recorded ``pending`` (its worker died while taking it) is finished first: a
  migration by recovering this run's journal entries for those keys (other workers' moves
  are left alone), a deletion by looking whether the object is gone;
- every other action is recorded ``pending``, taken by the same executor as a local run,
  and recorded with its final outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select, update

from shelflife.base.aio import run_sync
from shelflife.base.faults import checkpoint
from shelflife.catalog.catalog import _Guard
from shelflife.catalog.lock import Fence, WorkerLease, lease_fence, lease_gone
from shelflife.catalog.schema import run_actions
from shelflife.engine.context import Context
from shelflife.engine.executor import Executor
from shelflife.engine.migrate import migrator
from shelflife.errors import LeaseLost, ObjectNotFound
from shelflife.model.actions import Action, Failure, Skip
from shelflife.model.outcome import RunOutcome
from shelflife.model.plan import Plan

LOG = logging.getLogger("shelflife.fanout")
FINAL = ("done", "skipped", "failed")


class RunActions:
    """The ``run_actions`` ledger of fanned-out runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def outcomes(self, run_id: str, items: Sequence[Action]) -> dict[tuple[str, str], str]:
        """(tier, key) → outcome recorded for these actions of the run."""
        keys = [item.key for item in items]
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(run_actions.c.tier, run_actions.c.key, run_actions.c.outcome).where(
                    run_actions.c.run_id == run_id, run_actions.c.key.in_(keys)
                )
            )
            return {(tier, key): outcome for tier, key, outcome in rows}

    def pending(self, run_id: str, items: Sequence[Action]) -> None:
        rows = [
            {
                "run_id": run_id,
                "action": item.action,
                "tier": item.tier,
                "key": item.key,
                "rule": item.rule,
                "bytes": item.bytes,
                "to_tier": item.to,
                "outcome": "pending",
                "detail": None,
                "age": item.age,
                "aged_from": item.aged_from,
            }
            for item in items
        ]
        if rows:
            with _Guard(self.engine, begin=True) as conn:
                conn.execute(run_actions.insert(), rows)

    def finish(self, run_id: str, item: Action, outcome: str, detail: str | None = None) -> None:
        self.finish_many(run_id, [(item, outcome, detail)])

    def finish_many(self, run_id: str, settled: Sequence[tuple[Action, str, str | None]]) -> None:
        """Record the final outcome of each action, in one transaction."""
        if not settled:
            return
        statement = (
            update(run_actions)
            .where(
                run_actions.c.run_id == bindparam("b_run"),
                run_actions.c.action == bindparam("b_action"),
                run_actions.c.tier == bindparam("b_tier"),
                run_actions.c.key == bindparam("b_key"),
            )
            .values(outcome=bindparam("b_outcome"), detail=bindparam("b_detail"))
        )
        rows = [
            {
                "b_run": run_id,
                "b_action": item.action,
                "b_tier": item.tier,
                "b_key": item.key,
                "b_outcome": outcome,
                "b_detail": None if detail is None else detail[:1000],
            }
            for item, outcome, detail in settled
        ]
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(statement, rows)  # one statement, executed for each row

    def results(self, run_id: str) -> tuple[list[Action], list[Skip], list[Failure]]:
        """Everything a run's workers recorded, as the run record holds it."""
        actions: list[Action] = []
        skipped: list[Skip] = []
        failed: list[Failure] = []
        columns = run_actions.c
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(
                    columns.action,
                    columns.rule,
                    columns.tier,
                    columns.key,
                    columns.bytes,
                    columns.to_tier,
                    columns.outcome,
                    columns.detail,
                    columns.age,
                    columns.aged_from,
                )
                .where(columns.run_id == run_id)
                .order_by(columns.action, columns.tier, columns.key)
            )
            for action, rule, tier, key, size, to, outcome, detail, age, aged_from in rows:
                if outcome == "done":
                    actions.append(
                        Action(action, rule, tier, key, size, to=to, age=age, aged_from=aged_from)
                    )
                elif outcome == "skipped":
                    skipped.append(Skip(rule, tier, key, detail or ""))
                else:  # failed, or pending: its batch never came back
                    failed.append(Failure(rule, tier, key, detail or "the batch did not finish"))
        return actions, skipped, failed


def execute_batch(context: Context, run_id: str, plan_now: datetime, items: list[Action]) -> int:
    """Take one batch of a fanned-out run, idempotently (see the module's docstring), while
    its run holds the catalog's lease: a batch of a run whose lease is gone (its
    coordinator died, or another run took over) is dropped. The number of actions taken."""
    engine = context.catalog.engine
    period = context.config.executor.lease.total_seconds()
    with WorkerLease(engine, run_id, period):  # first the row, then the check
        gone = lease_gone(engine, run_id)
        if gone:
            LOG.warning("batch of %d actions of run %s dropped: %s", len(items), run_id, gone)
            return 0
        try:
            return _execute_batch(context, run_id, plan_now, items, lease_fence(run_id=run_id))
        except LeaseLost as exc:  # mid-batch: its journal entries are the successor's now
            LOG.warning("batch of run %s stopped: %s", run_id, exc.message)
            return 0


def _execute_batch(
    context: Context, run_id: str, plan_now: datetime, items: list[Action], fence: Fence
) -> int:
    ledger = RunActions(context.catalog.engine)
    recorded = ledger.outcomes(run_id, items)
    leftover = [i for i in items if recorded.get((i.tier, i.key)) == "pending"]
    fresh = [i for i in items if (i.tier, i.key) not in recorded]
    retry = _settle_pending(context, ledger, run_id, leftover, fence)
    ledger.pending(run_id, fresh)
    todo = retry + fresh
    if not todo:
        return 0
    checkpoint("batch-pending")
    outcome = RunOutcome("run", Plan(now=plan_now), run_id=run_id)
    Executor(context, outcome, fence=fence).take(todo)
    done = {(a.tier, a.key) for a in outcome.actions}
    reasons = {(s.tier, s.key): s.reason for s in outcome.skipped}
    errors = {(f.tier, f.key): f.error for f in outcome.failed}
    settled: list[tuple[Action, str, str | None]] = []
    for item in todo:
        where = (item.tier, item.key)
        if where in done:
            settled.append((item, "done", None))
        elif where in errors:
            settled.append((item, "failed", errors[where]))
        else:
            settled.append((item, "skipped", reasons.get(where, "not taken")))
    ledger.finish_many(run_id, settled)
    if outcome.stopped:  # a reference source went away: the coordinator stops the run
        raise RuntimeError(outcome.stopped)
    return len(todo)


def _settle_pending(
    context: Context, ledger: RunActions, run_id: str, items: list[Action], fence: Fence
) -> list[Action]:
    """Finish what a dead worker left: return the actions to take again."""
    if not items:
        return []
    again: list[Action] = []
    moves = [item for item in items if item.action == "migrate"]
    if moves:
        engine = migrator(context, fence)
        run_sync(engine.recover(run_id=run_id, keys=[item.key for item in moves]))
        for tier in {item.tier for item in moves}:
            of_tier = [item for item in moves if item.tier == tier]
            finished = engine.journal.done_keys(run_id, tier, [item.key for item in of_tier])
            for item in of_tier:
                if item.key in finished:
                    ledger.finish(run_id, item, "done")
                else:
                    again.append(item)
    for item in items:
        if item.action == "migrate":
            continue
        store = context.store(item.tier)
        try:
            run_sync(store.head(item.key))
        except ObjectNotFound:
            context.catalog.forget(item.tier, [item.key])
            ledger.finish(run_id, item, "done")  # it was being deleted, and it is gone
            continue
        again.append(item)
    return again


def batch_payload(items: list[dict[str, Any]]) -> list[Action]:
    return [Action.from_json(item) for item in items]
