"""Recovery and recall: migrations finished or undone, objects brought back to a tier.

Both hold the catalog's run lock; recall first recovers whatever an earlier run left
unfinished, then moves the object the way a migration does (copy, verify, repoint its
rows, delete the source).
"""

from __future__ import annotations

from shelflife.base.aio import run_sync
from shelflife.base.progress import Progress
from shelflife.catalog.actionlog import LogEntry
from shelflife.catalog.journal import Candidate, Entry
from shelflife.engine.context import Context
from shelflife.engine.migrate import migrator
from shelflife.errors import ShelflifeError, UsageError
from shelflife.model.locations import Location
from shelflife.service import actionlog
from shelflife.service.objects import resolve


def recover(context: Context, progress: Progress | None = None) -> dict[str, int]:
    """Complete or undo every migration an interrupted run left unfinished."""
    with context.run_lock("shelflife recover"):
        return recover_logged(context, progress, command="recover")


def recover_logged(
    context: Context,
    progress: Progress | None = None,
    *,
    command: str,
    run_id: str | None = None,
) -> dict[str, int]:
    """:func:`recover` under a lock the caller holds, each entry it settles logged (as
    part of run ``run_id`` of ``command``, the run that found them)."""
    settled: list[tuple[Entry, str]] = []
    try:
        return run_sync(migrator(context).recover(progress, settled=settled))
    finally:
        actionlog.record(context, actionlog.recovery_entries(settled, command, run_id))


def recall(
    context: Context, ref: str, to: str | None, progress: Progress | None = None
) -> Location:
    """Bring an object to ``to`` (the default tier) the same way a migration moves it."""
    location = resolve(context, ref)
    target = to or context.config.default_tier
    if target not in context.config.tiers:
        raise UsageError(f"unknown tier {target!r}")
    if location.tier == target:
        return location
    row = context.catalog.get(location.tier, location.key)
    if row is None:
        info = run_sync(context.store(location.tier).head(location.key))
        size, modified, checksum = info.size, info.modified, None
    else:
        size, modified, checksum = row.size, row.modified_at, row.checksum
    candidate = Candidate(location.key, size, modified, None, checksum)
    with context.run_lock(f"shelflife recall {location.key[:200]}"):
        recover_logged(context, progress, command="recall")
        engine = migrator(context)
        result = run_sync(engine.migrate("recall", location.tier, target, [candidate], progress))
    if result.failed:
        error = result.failed[0][2]
        actionlog.record(context, [_recalled(location, target, size, "failed", error)])
        raise ShelflifeError(f"recall of {location.key} failed: {error}")
    actionlog.record(context, [_recalled(location, target, size, "done", "recalled on request")])
    return Location(target, location.key)


def _recalled(location: Location, to: str, size: int, outcome: str, reason: str) -> LogEntry:
    return actionlog.entry(
        "recall",
        "recall",
        location.tier,
        location.key,
        size=size,
        to=to,
        outcome=outcome,
        reason=reason,
    )
