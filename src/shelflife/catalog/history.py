"""Plans and run history in the catalog."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import (
    counters,
    journal,
    plans,
    run_actions,
    runs,
    stats_snapshots,
)

MAX_FAILURES_KEPT = 100


STATS_KEPT = 2200
"""Stats bodies kept: about 90 days of the hourly refresh (a body is a few hundred bytes
per tier)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    command: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    dry_run: bool
    plan_id: str | None
    totals: dict[str, dict[str, int]]
    failed_count: int
    failures: list[dict[str, str]]
    error: str | None
    host: str | None
    pid: int | None

    def as_json(self) -> dict[str, Any]:
        duration = (
            None
            if self.finished_at is None
            else round((self.finished_at - self.started_at).total_seconds(), 3)
        )
        return {
            "run_id": self.id,
            "command": self.command,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "duration_seconds": duration,
            "status": self.status,
            "dry_run": self.dry_run,
            "plan_id": self.plan_id,
            "totals": self.totals,
            "failed_count": self.failed_count,
            "failures": self.failures,
            "error": self.error,
            "host": self.host,
            "pid": self.pid,
        }


class History:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- plans -----------------------------------------------------------------------------

    def begin_plan(self, plan_id: str, *, created_at: datetime, evaluated_at: datetime) -> None:
        """Record a plan being built (its items are written under its id meanwhile)."""
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(
                insert(plans).values(
                    id=plan_id,
                    created_at=created_at,
                    evaluated_at=evaluated_at,
                    status="building",
                    actions=0,
                    bytes=0,
                )
            )

    def finish_plan(
        self, plan_id: str, *, actions: int, size: int, header: dict[str, Any] | None = None
    ) -> None:
        """The plan is complete: it may be applied (once). ``header``: what the plan says
        besides its items (rules, refusals, notes, warnings), kept with it."""
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(
                update(plans)
                .where(plans.c.id == plan_id)
                .values(
                    status="open",
                    actions=actions,
                    bytes=size,
                    header=None if header is None else json.dumps(header, default=str),
                )
            )

    def plan_record(self, plan_id: str) -> tuple[datetime, str, int, dict[str, Any]] | None:
        """``(evaluated_at, status, actions, header)`` of a saved plan."""
        with _Guard(self.engine, begin=False) as conn:
            row = conn.execute(
                select(plans.c.evaluated_at, plans.c.status, plans.c.actions, plans.c.header).where(
                    plans.c.id == plan_id
                )
            ).first()
        if row is None:
            return None
        header = json.loads(row[3]) if row[3] else {}
        return row[0], str(row[1]), int(row[2]), header

    def plan_status(self, plan_id: str) -> tuple[str, str | None] | None:
        """``(status, run_id)`` of a saved plan, or None when the catalog never saw it."""
        with _Guard(self.engine, begin=False) as conn:
            row = conn.execute(
                select(plans.c.status, plans.c.run_id).where(plans.c.id == plan_id)
            ).first()
        return None if row is None else (str(row[0]), row[1])

    def claim_plan(self, plan_id: str, run_id: str, now: datetime) -> bool:
        """Mark an open plan applied by ``run_id``; False if it was not open (one winner)."""
        with _Guard(self.engine, begin=True) as conn:
            result = conn.execute(
                update(plans)
                .where(plans.c.id == plan_id, plans.c.status == "open")
                .values(status="applied", applied_at=now, run_id=run_id)
            )
            return bool(result.rowcount)

    # -- runs ------------------------------------------------------------------------------

    def start(
        self,
        run_id: str,
        *,
        command: str,
        trigger: str,
        now: datetime,
        dry_run: bool = False,
        plan_id: str | None = None,
    ) -> None:
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    command=command,
                    trigger=trigger,
                    started_at=now,
                    status="running",
                    dry_run=int(dry_run),
                    plan_id=plan_id,
                    failed_count=0,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                )
            )

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        now: datetime,
        totals: dict[str, dict[str, int]] | None = None,
        failures: list[dict[str, str]] | None = None,
        error: str | None = None,
        plan_id: str | None = None,
        increments: dict[tuple[str, str], int] | None = None,
    ) -> None:
        """Record how a run ended, and add its ``increments`` to the cumulative counters
        (``{(metric name, labels JSON): amount}``) in the same transaction."""
        failures = failures or []
        values: dict[str, Any] = {
            "status": status,
            "finished_at": now,
            "totals": json.dumps(totals or {}),
            "failed_count": len(failures),
            "failures": json.dumps(failures[:MAX_FAILURES_KEPT])[:20000],
            "error": None if error is None else error[:2000],
        }
        if plan_id is not None:
            values["plan_id"] = plan_id
        with _Guard(self.engine, begin=True) as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            if increments:
                _add(conn, increments)

    # -- counters and stats snapshots (metrics) ---------------------------------------------

    def counters(self) -> list[tuple[str, dict[str, str], int]]:
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(select(counters.c.name, counters.c.labels, counters.c.value))
            return [(name, json.loads(labels), int(value)) for name, labels, value in rows]

    def durations(self) -> list[float]:
        """Seconds each finished run took (dry runs are not recorded)."""
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(runs.c.started_at, runs.c.finished_at).where(runs.c.finished_at.is_not(None))
            )
            return [(end - start).total_seconds() for start, end in rows]

    def running(self) -> int:
        with _Guard(self.engine, begin=False) as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(runs).where(runs.c.status == "running")
                ).scalar_one()
            )

    def save_stats(self, body: dict[str, Any], now: datetime, keep: int = STATS_KEPT) -> None:
        """Store a stats body; the newest ``keep`` are kept (the dashboard's usage history:
        hourly refreshes keep about three months)."""
        with _Guard(self.engine, begin=True) as conn:
            result = conn.execute(
                insert(stats_snapshots).values(taken_at=now, body=json.dumps(body))
            )
            newest = int(result.inserted_primary_key[0])  # type: ignore[index]
            conn.execute(delete(stats_snapshots).where(stats_snapshots.c.id <= newest - keep))

    def latest_stats(self) -> tuple[datetime, dict[str, Any]] | None:
        with _Guard(self.engine, begin=False) as conn:
            row = conn.execute(
                select(stats_snapshots.c.taken_at, stats_snapshots.c.body)
                .order_by(stats_snapshots.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else (row[0], json.loads(row[1]))

    def close_interrupted(self, now: datetime) -> int:
        """Mark runs still 'running' as failed: called under the run lock, so whatever
        started them has died (killed, machine lost) without finishing."""
        with _Guard(self.engine, begin=True) as conn:
            result = conn.execute(
                update(runs)
                .where(runs.c.status == "running")
                .values(
                    status="failed",
                    finished_at=now,
                    error="interrupted: the process ended before the run finished "
                    "(its unfinished steps were recovered by the next run)",
                )
            )
            return int(result.rowcount or 0)

    def list(self, limit: int = 50) -> list[RunRecord]:
        with _Guard(self.engine, begin=False) as conn:
            rows = conn.execute(
                select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
            ).mappings()
            return [_record(row) for row in rows]

    def get(self, run_id: str) -> RunRecord | None:
        with _Guard(self.engine, begin=False) as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        return None if row is None else _record(row)

    def last_success(self, command: str | None = None) -> datetime | None:
        """When the last successful run (of ``command``, if given) ended."""
        query = select(runs.c.finished_at).where(runs.c.status == "ok", runs.c.dry_run == 0)
        if command is not None:
            query = query.where(runs.c.command == command)
        with _Guard(self.engine, begin=False) as conn:
            value = conn.execute(query.order_by(runs.c.finished_at.desc()).limit(1)).scalar()
        return value


def labels_key(**labels: str) -> str:
    return json.dumps(labels, sort_keys=True)


def _add(conn: Any, increments: dict[tuple[str, str], int]) -> None:
    """``counter += amount`` for each, inserting counters seen for the first time."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
    for (name, labels), amount in increments.items():
        if not amount:
            continue
        statement = upsert(counters).values(name=name, labels=labels, value=amount)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[counters.c.name, counters.c.labels],
                set_={"value": counters.c.value + statement.excluded.value},
            )
        )


def _record(row: Any) -> RunRecord:
    return RunRecord(
        id=row["id"],
        command=row["command"],
        trigger=row["trigger"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        dry_run=bool(row["dry_run"]),
        plan_id=row["plan_id"],
        totals=json.loads(row["totals"]) if row["totals"] else {},
        failed_count=int(row["failed_count"]),
        failures=json.loads(row["failures"]) if row["failures"] else [],
        error=row["error"],
        host=row["host"],
        pid=row["pid"],
    )


# -- reads for the dashboard: the kept stats series and a run's itemized actions -------------


@dataclass(frozen=True, slots=True)
class RunItem:
    """One object a run acted on, as the catalog keeps it (``outcome``: done, failed,
    skipped, undone, or the step an unfinished move stopped at)."""

    action: str
    rule: str
    tier: str
    to: str | None
    key: str
    bytes: int
    outcome: str
    detail: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "rule": self.rule,
            "tier": self.tier,
            "to": self.to,
            "key": self.key,
            "bytes": self.bytes,
            "outcome": self.outcome,
            "detail": self.detail,
        }


def stats_series(engine: Engine, limit: int = 2200) -> list[tuple[datetime, dict[str, Any]]]:
    """The kept stats bodies (see :meth:`History.save_stats`), oldest first: at most the
    newest ``limit``."""
    with _Guard(engine, begin=False) as conn:
        rows = conn.execute(
            select(stats_snapshots.c.taken_at, stats_snapshots.c.body)
            .order_by(stats_snapshots.c.id.desc())
            .limit(limit)
        ).all()
    return [(row[0], json.loads(row[1])) for row in reversed(rows)]


def run_items(engine: Engine, run_id: str, *, limit: int, offset: int) -> tuple[int, list[RunItem]]:
    """``(how many, one page)`` of the objects a run acted on that the catalog itemizes:
    a fanned-out run's outcomes (``run_actions``), else the run's moves (the migration
    journal). Deletions of a run executed in one process are counted in its totals only."""
    with _Guard(engine, begin=False) as conn:
        fanned = func.count().select().where(run_actions.c.run_id == run_id)
        total = int(conn.execute(fanned).scalar_one())
        if total:
            c = run_actions.c
            rows = conn.execute(
                select(c.action, c.rule, c.tier, c.to_tier, c.key, c.bytes, c.outcome, c.detail)
                .where(c.run_id == run_id)
                .order_by(c.action, c.tier, c.key)
                .limit(limit)
                .offset(offset)
            ).all()
            return total, [RunItem(*(row[:5]), int(row[5]), row[6], row[7]) for row in rows]
        j = journal.c
        moved = func.count().select().where(j.run_id == run_id)
        total = int(conn.execute(moved).scalar_one())
        moves = conn.execute(
            select(j.rule, j.src_tier, j.dst_tier, j.key, j.size, j.step, j.error)
            .where(j.run_id == run_id)
            .order_by(j.id)
            .limit(limit)
            .offset(offset)
        ).all()
    return total, [
        RunItem("migrate", rule, src, dst, key, int(size), step, error)
        for rule, src, dst, key, size, step, error in moves
    ]
