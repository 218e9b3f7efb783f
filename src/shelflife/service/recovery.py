"""Recovery and recall: migrations finished or undone, objects brought back to a tier.

Both hold the catalog's run lock; recall first recovers whatever an earlier run left
unfinished, then moves the object the way a migration does (copy, verify, repoint its
rows, delete the source).
"""

from __future__ import annotations

from shelflife.base.aio import run_sync
from shelflife.base.progress import Progress
from shelflife.catalog.journal import Candidate
from shelflife.catalog.lock import RunLock
from shelflife.engine.context import Context
from shelflife.engine.migrate import migrator
from shelflife.errors import ShelflifeError, UsageError
from shelflife.model.locations import Location
from shelflife.service.objects import resolve


def recover(context: Context, progress: Progress | None = None) -> dict[str, int]:
    """Complete or undo every migration an interrupted run left unfinished."""
    with RunLock(context.catalog, "shelflife recover"):
        return run_sync(migrator(context).recover(progress))


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
    with RunLock(context.catalog, f"shelflife recall {location.key[:200]}"):
        engine = migrator(context)
        run_sync(engine.recover(progress))
        result = run_sync(engine.migrate("recall", location.tier, target, [candidate], progress))
    if result.failed:
        raise ShelflifeError(f"recall of {location.key} failed: {result.failed[0][2]}")
    return Location(target, location.key)
