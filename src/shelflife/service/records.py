"""Recording runs: the run history and its counters (one transaction), one log line per
action outcome and per run, and the stored stats that /metrics serves."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from shelflife.base.logs import ACTIONS, RUNS, line
from shelflife.base.units import utcnow
from shelflife.catalog.history import History, labels_key
from shelflife.config.model import Config
from shelflife.engine.context import Context
from shelflife.engine.stats import TierUsage, classify, stats_json, usage
from shelflife.errors import ShelflifeError, StoreError
from shelflife.model.actions import Action, ActionKind, Failure, Skip, totals
from shelflife.service import actionlog, notify
from shelflife.service.policy import noncurrent_bytes

LOG = logging.getLogger("shelflife")
DELETE_REASONS: dict[str, str] = {
    ActionKind.EXPIRE: "expired",
    ActionKind.DELETE_ORPHAN: "orphan",
    ActionKind.PURGE_QUARANTINE: "quarantine-purged",
}


def finish_run(
    context: Context,
    run_id: str,
    command: str,
    status: str,
    actions: list[Action] | None = None,
    skipped: list[Skip] | None = None,
    failed: list[Failure] | None = None,
    *,
    error: str | None = None,
    plan_id: str | None = None,
    recovered: bool = False,
) -> None:
    """Record a run's end (history and counters, one transaction), log one line per
    action outcome, and refresh the stored stats that /metrics serves (``recovered``: the
    run rolled back or finished interrupted work, on tiers its actions do not name)."""
    actions, skipped, failed = actions or [], skipped or [], failed or []
    log_outcomes(run_id, actions, skipped, failed)
    History(context.catalog.engine).finish(
        run_id,
        status=status,
        now=utcnow(),
        totals=totals(actions),
        failures=[f.as_json() for f in failed],
        error=error,
        plan_id=plan_id,
        increments=increments(context.config, command, status, actions, skipped, failed),
    )
    actionlog.record_run(context, run_id, command, actions, skipped, failed)
    log_run(run_id, status, actions, failed, error)
    try:
        # A tier the run deleted from may have gained noncurrent versions, and so may a
        # versioned destination (a copy that failed its verification is deleted and sent
        # again); after a failure or a recovery every tier is asked. The others keep
        # their last figures (for at most an hour) rather than cost an S3 client and a
        # listing of versions each.
        untidy = recovered or bool(failed) or status == "failed"
        refresh_stats(
            context,
            ask=None if untidy else {a.tier for a in actions},
            ask_if_versioned={a.to for a in actions if a.to},
        )
    except ShelflifeError as exc:  # the run is recorded; stale figures are no reason to fail
        LOG.warning("stats not refreshed after %s: %s", run_id, exc)


def action_kind(config: Config, rule_id: str, default: str = "unknown") -> str:
    """The action name a rule's actions carry (for skips and failures, which name a rule)."""
    for rule in config.rules:
        if rule.id == rule_id:
            return str(ActionKind.of_rule(rule.action, rule.mode))
    return default


def increments(
    config: Config,
    command: str,
    status: str,
    actions: Iterable[Action],
    skipped: Iterable[Skip],
    failed: Iterable[Failure],
) -> dict[tuple[str, str], int]:
    """What one finished run adds to the counters."""
    result: dict[tuple[str, str], int] = {}

    def add(name: str, amount: int, **labels: str) -> None:
        key = (name, labels_key(**labels))
        result[key] = result.get(key, 0) + amount

    add("shelflife_runs", 1, command=command, status=status)
    for action in actions:
        add("shelflife_actions", 1, action=action.action, outcome="done")
        if action.action == "migrate" and action.to:
            add("shelflife_moved_bytes", action.bytes, **{"from": action.tier, "to": action.to})
        reason = DELETE_REASONS.get(action.action)
        if reason:
            add("shelflife_deleted_bytes", action.bytes, tier=action.tier, reason=reason)
    for skip in skipped:
        add("shelflife_actions", 1, action=action_kind(config, skip.rule), outcome="skipped")
    for failure in failed:
        add("shelflife_actions", 1, action=action_kind(config, failure.rule), outcome="failed")
    return result


def stats_body(
    context: Context,
    tiers: list[TierUsage] | None = None,
    ask: Collection[str] | None = None,
    ask_if_versioned: Collection[str] = (),
) -> dict[str, Any]:
    """Usage per tier and health, as ``stats --json`` prints them.

    The versioning state and noncurrent versions of an S3 tier are asked of the store for
    every tier, or only for those in ``ask`` and those in ``ask_if_versioned`` that the
    last figures say keep versions; the others keep the last stored figures while they
    are younger than :data:`CARRIED_FOR` (``versioning_checked_at`` says when they were
    taken)."""
    tiers = usage(context) if tiers is None else tiers
    body = stats_json(tiers, classify(tiers, context.config.health))
    previous: dict[str, Any] | None = None
    now = utcnow()
    for name, tier in context.config.tiers.items():
        if tier.scheme != "s3" or tier.versioned is False:
            continue
        entry = body["tiers"][name]
        if ask is not None and name not in ask:
            if previous is None:
                stored = History(context.catalog.engine).latest_stats()
                previous = {} if stored is None else stored[1].get("tiers", {})
            if _carried(previous.get(name, {}), entry, now, name in ask_if_versioned):
                continue
        versioned = context.versioned(name)
        entry["versioning_checked_at"] = now.isoformat()
        if not versioned:
            continue
        entry["versioned"] = True
        try:
            entry["noncurrent_objects"], entry["noncurrent_bytes"] = noncurrent_bytes(tier)
        except StoreError:
            entry["noncurrent_objects"] = entry["noncurrent_bytes"] = None
    return body


CARRIED_FOR = timedelta(hours=1)  # how long versioning figures are carried unasked


def _carried(before: dict[str, Any], entry: dict[str, Any], now: datetime, touched: bool) -> bool:
    """Copy a tier's last versioning figures into ``entry`` if they may stand: taken less
    than :data:`CARRIED_FOR` ago, and not of a versioned bucket the run wrote to."""
    taken = before.get("versioning_checked_at")
    if taken is None or now - datetime.fromisoformat(taken) >= CARRIED_FOR:
        return False
    if touched and before.get("versioned"):
        return False
    for field in ("versioning_checked_at", "versioned", "noncurrent_objects", "noncurrent_bytes"):
        if field in before:
            entry[field] = before[field]
    return True


def refresh_stats(
    context: Context,
    ask: Collection[str] | None = None,
    ask_if_versioned: Collection[str] = (),
) -> dict[str, Any]:
    """Compute the stats from the catalog and store them for /metrics (S3 versioning
    figures asked of every tier, or of those in ``ask``: see :func:`stats_body`)."""
    body = stats_body(context, ask=ask, ask_if_versioned=ask_if_versioned)
    notify.save_stats(context, body, utcnow())  # and health-changed, if it did
    return body


def current_stats(context: Context) -> tuple[float, dict[str, Any]]:
    """The stored stats (taken now if none were ever stored) and when they were taken."""
    stored = History(context.catalog.engine).latest_stats()
    if stored is None:
        return utcnow().timestamp(), refresh_stats(context)
    return stored[0].timestamp(), stored[1]


def log_outcomes(
    run_id: str, actions: Iterable[Action], skipped: Iterable[Skip], failed: Iterable[Failure]
) -> None:
    """One INFO line per action taken or skipped, one WARNING line per failure."""
    if not ACTIONS.isEnabledFor(logging.INFO) and not ACTIONS.isEnabledFor(logging.WARNING):
        return
    for action in actions:
        fields = {
            "run_id": run_id,
            "action": action.action,
            "outcome": "done",
            "rule": action.rule,
            "tier": action.tier,
            "key": action.key,
            "bytes": action.bytes,
        }
        if action.to:
            fields["to"] = action.to
        ACTIONS.info(line(fields), extra=fields)
    for skip in skipped:
        fields = {
            "run_id": run_id,
            "outcome": "skipped",
            "rule": skip.rule,
            "tier": skip.tier,
            "key": skip.key,
            "reason": skip.reason,
        }
        ACTIONS.info(line(fields), extra=fields)
    for failure in failed:
        fields = {
            "run_id": run_id,
            "outcome": "failed",
            "rule": failure.rule,
            "tier": failure.tier,
            "key": failure.key,
            "error": failure.error,
        }
        ACTIONS.warning(line(fields), extra=fields)


def log_run(
    run_id: str, status: str, actions: list[Action], failed: list[Failure], error: str | None
) -> None:
    fields = {"run_id": run_id, "status": status, "actions": len(actions), "failed": len(failed)}
    if error:
        fields["error"] = error
    level = logging.INFO if status == "ok" else logging.WARNING
    RUNS.log(level, line(fields), extra=fields)
