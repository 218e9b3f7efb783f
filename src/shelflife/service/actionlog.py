"""The action log: what every real run did to each object, and why; kept for
``[action_log] keep`` and read by ``shelflife log`` and ``/api/v1/log``.

What is logged (dry runs log nothing; ``keep = "0s"`` turns the log off):

- every action a run, ``apply``, ``gc``, ``enforce`` or ``expire`` took, skipped or failed
  (in process or on Celery workers: the run record gathers both), with the reason its rule
  selected it, the age basis and the instant the age counted from; quarantine purges;
- migrations an interrupted run left, as recovery finishes or undoes them;
- what users do to objects through shelflife: deletions by ``rm``, ``Shelf.delete`` and
  HTTP ``DELETE`` (one entry per tier's copy; HTTP names the token), ``restore`` from
  quarantine, ``recall``, and releases by ``listen``.

Uploads, reads and pins are not actions and are not logged. Entries are written at the
end of each run, a batch of rows per statement, and entries older than ``keep`` are
pruned then, in bounded batches for at most ``[action_log] prune_seconds``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from shelflife.base.keys import validate_key
from shelflife.base.units import format_age, utcnow
from shelflife.catalog.actionlog import ActionLog, LogEntry, LogFilter
from shelflife.catalog.journal import Entry
from shelflife.config.model import Config, RuleConfig
from shelflife.engine.context import Context
from shelflife.errors import InvalidKeyError, ShelflifeError
from shelflife.model.actions import Action, ActionKind, Failure, Skip
from shelflife.model.locations import Location

LOG = logging.getLogger("shelflife")

__all__ = ["LogEntry", "LogFilter", "find", "keys_named", "prune", "record", "record_run"]


# -- writing ---------------------------------------------------------------------------


def record_run(
    context: Context,
    run_id: str,
    command: str,
    actions: Iterable[Action],
    skipped: Iterable[Skip],
    failed: Iterable[Failure],
) -> None:
    """Log a finished run's outcomes, then prune what has outlived ``keep``. A log that
    cannot be written is a warning, whatever the database's error: the run is recorded,
    notified and its plan dropped whatever happens here."""
    if not context.config.action_log.keep:
        return
    now = utcnow()
    entries = run_entries(context.config, run_id, command, now, actions, skipped, failed)
    try:
        ActionLog(context.catalog.engine).write(entries)
    except (ShelflifeError, SQLAlchemyError) as exc:
        LOG.warning("action log not written for %s: %s", run_id, _why(exc))
        return
    try:
        prune(context, now, budget=context.config.action_log.prune_seconds)
    except (ShelflifeError, SQLAlchemyError) as exc:  # the next run prunes again
        LOG.warning("action log not pruned: %s", _why(exc))


def record(context: Context, entries: Iterable[LogEntry]) -> None:
    """Log actions that are no run's (``rm``, ``restore``, ``recall`` …); a warning on
    failure: the action itself is done."""
    if not context.config.action_log.keep:
        return
    try:
        ActionLog(context.catalog.engine).write(entries)
    except (ShelflifeError, SQLAlchemyError) as exc:
        LOG.warning("action log not written: %s", _why(exc))


def _why(exc: ShelflifeError | SQLAlchemyError) -> str:
    """A write's error in one line: the catalog's message, or the database's own (a
    table altered or dropped under shelflife is no OperationalError the guard turns)."""
    if isinstance(exc, ShelflifeError):
        return exc.message
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]


def entry(
    command: str,
    action: str,
    tier: str,
    key: str,
    *,
    reason: str,
    size: int | None = None,
    to: str | None = None,
    outcome: str = "done",
    detail: str | None = None,
    run_id: str | None = None,
) -> LogEntry:
    """One entry recorded now (for :func:`record`)."""
    return LogEntry(
        recorded_at=utcnow(),
        command=command,
        action=action,
        tier=tier,
        key=key,
        outcome=outcome,
        run_id=run_id,
        to=to,
        bytes=size,
        reason=reason,
        detail=detail,
    )


def sizes(context: Context, copies: Iterable[Location]) -> dict[Location, int | None]:
    """What the inventory says each copy holds (read before it is forgotten)."""
    found: dict[Location, int | None] = {}
    for copy in copies:
        row = context.catalog.get(copy.tier, copy.key)
        found[copy] = None if row is None else row.size
    return found


def deletions(
    copies: dict[Location, int | None], command: str, *, forced: bool, by: str | None = None
) -> list[LogEntry]:
    """Entries for an object deleted on request (``delete`` from the CLI's ``rm`` or
    Python, ``http-delete``), a copy each with its size (see :func:`sizes`); ``by``: who
    asked (an API token's name)."""
    reason = "deleted on request" + (" (forced: rows may point at it)" if forced else "")
    detail = None if by is None else f"by {by}"
    return [
        entry(command, "delete", copy.tier, copy.key, size=size, reason=reason, detail=detail)
        for copy, size in copies.items()
    ]


def run_entries(
    config: Config,
    run_id: str,
    command: str,
    now: datetime,
    actions: Iterable[Action],
    skipped: Iterable[Skip],
    failed: Iterable[Failure],
) -> Iterator[LogEntry]:
    """A run's outcomes as log entries: taken, then skipped, then failed."""
    rules = {rule.id: rule for rule in config.rules}
    for action in actions:
        rule = rules.get(action.rule)
        yield LogEntry(
            recorded_at=now,
            command=command,
            action=str(action.action),
            tier=action.tier,
            key=action.key,
            outcome="done",
            run_id=run_id,
            rule=action.rule,
            to=action.to,
            bytes=action.bytes,
            reason=selected_because(config, rule, action),
            age=action.age,
            aged_from=action.aged_from,
            detail=_rows_detail(action.rows),
        )
    for skip in skipped:
        rule = rules.get(skip.rule)
        yield LogEntry(
            recorded_at=now,
            command=command,
            action=_kind(rule, skip.rule),
            tier=skip.tier,
            key=skip.key,
            outcome="skipped",
            run_id=run_id,
            rule=skip.rule,
            to=None if rule is None else rule.to,
            reason=skip.reason,
        )
    for failure in failed:
        rule = rules.get(failure.rule)
        yield LogEntry(
            recorded_at=now,
            command=command,
            action=_kind(rule, failure.rule),
            tier=failure.tier,
            key=failure.key,
            outcome="failed",
            run_id=run_id,
            rule=None if failure.rule == "scan" else failure.rule,
            to=None if rule is None else rule.to,
            reason=failure.error,
        )


def recovery_entries(
    settled: Iterable[tuple[Entry, str]], command: str, run_id: str | None
) -> Iterator[LogEntry]:
    """What recovery did to each migration an interrupted run left (``verdict``:
    completed, undone or failed)."""
    now = utcnow()
    for journaled, verdict in settled:
        reason = {
            "completed": f"interrupted migration of run {journaled.run_id} finished",
            "undone": f"interrupted migration of run {journaled.run_id} undone; the "
            f"source on {journaled.src_tier} still serves",
        }.get(verdict, f"interrupted migration of run {journaled.run_id} left as it was")
        yield LogEntry(
            recorded_at=now,
            command=command,
            action="recover",
            tier=journaled.src_tier,
            key=journaled.key,
            outcome="failed" if verdict == "failed" else "done",
            run_id=run_id,
            rule=journaled.rule,
            to=journaled.dst_tier,
            bytes=journaled.size,
            reason=reason,
            detail=f"journal step {journaled.step}: {verdict}",
        )


def selected_because(config: Config, rule: RuleConfig | None, action: Action) -> str:
    """Why the action's rule selected its object, in words."""
    if action.action == ActionKind.PURGE_QUARANTINE:
        return "in quarantine longer than its rule's quarantine_days"
    if rule is None:
        return f"planned by rule {action.rule!r} (no longer in the configuration)"
    basis = action.age or rule.age_basis
    counted = f"counted from {basis}"
    if action.aged_from is not None:
        counted += f" {action.aged_from.isoformat()}"
    if rule.action == "migrate":
        reasons = []
        if rule.when == "over-watermark":
            tier = config.tiers.get(action.tier)
            mark = "" if tier is None else f" ({tier.high_watermark:.0%})"
            reasons.append(
                f"tier {action.tier} was over its high watermark{mark}; {rule.order} first"
            )
        if rule.after is not None:
            reasons.append(f"older than after = {format_age(rule.after)} ({counted})")
        return "; ".join(reasons)
    if rule.action == "expire":
        after = "-" if rule.after is None else format_age(rule.after)
        return f"retention: older than after = {after} ({counted})"
    return f"no reference names it; older than grace = {format_age(rule.grace)} ({counted})"


def _kind(rule: RuleConfig | None, rule_id: str) -> str:
    if rule_id == "scan":
        return "scan"
    if rule is None:
        return "unknown"
    return str(ActionKind.of_rule(rule.action, rule.mode))


def _rows_detail(rows: dict[str, str] | None) -> str | None:
    if not rows:
        return None
    return "rows: " + ", ".join(f"{label} {what}" for label, what in sorted(rows.items()))


# -- reading and upkeep ---------------------------------------------------------------


def keys_named(context: Context, value: str) -> list[str]:
    """The keys a key or reference value may name (``shelflife log --key``): the value
    itself if it can be a key, and every key the resolver reads in it. No store is
    asked: the object may be long gone, which is why one asks the log."""
    keys = [location.key for location in context.locator.resolve(value)]
    with contextlib.suppress(InvalidKeyError):
        keys.append(validate_key(value))
    return list(dict.fromkeys(keys))


def find(
    context: Context,
    chosen: LogFilter,
    *,
    after: int = 0,
    limit: int = 100,
    newest: bool = False,
) -> list[LogEntry]:
    """A page of entries (see :meth:`ActionLog.page`)."""
    return ActionLog(context.catalog.engine).page(chosen, after=after, limit=limit, newest=newest)


def stream(
    context: Context, chosen: LogFilter, *, after: int = 0, limit: int | None = None
) -> Iterator[LogEntry]:
    """Every matching entry, oldest first, in bounded memory (JSON lines export)."""
    return ActionLog(context.catalog.engine).stream(chosen, after=after, limit=limit)


def prune(
    context: Context, now: datetime | None = None, *, budget: float | None = None
) -> tuple[int, bool]:
    """Delete entries older than ``[action_log] keep`` (for at most ``budget`` seconds);
    return how many went and whether older ones are left."""
    keep = context.config.action_log.keep
    return ActionLog(context.catalog.engine).prune((now or utcnow()) - keep, budget=budget)
