"""What the two services shelflife replaces did, through shelflife's own pipeline, in
the shapes their callers read (``shelflife.compat``, the Celery tasks under the original
names, and the ``heimdall_storage_*`` gauges all come here).

- The storage service's ``enforce_threshold()`` migrated the oldest outputs until the
  disk was at or below its threshold (80 %): :func:`enforce_threshold` is ``enforce``
  with each migrated tier's low watermark at its high watermark.
- The MinIO clean-up's ``cleanup_orphan_files(dry_run=…)`` and ``get_storage_stats()``
  worked per bucket: :func:`cleanup_orphan_files` is ``gc`` on the tiers a bucket names,
  and :func:`buckets_view` the stats per bucket in GB. A tier's bucket is its bucket
  (or container) name, or the tier's name for a ``file://`` tier or when two tiers share
  a bucket.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from shelflife.config.model import Config, RuleConfig
from shelflife.engine.context import Context
from shelflife.engine.executor import Dispatcher
from shelflife.errors import RefusedError, ShelflifeError, UsageError
from shelflife.model.actions import ActionKind
from shelflife.model.outcome import RunOutcome
from shelflife.model.selection import rule_tiers
from shelflife.service import runs

LOG = logging.getLogger("shelflife")
GB = 1_000_000_000  # the gauges' unit, as shelflife spells sizes ("140GB")
RETENTION_DAYS = 90
ORPHAN_ACTIONS = (ActionKind.DELETE_ORPHAN, ActionKind.QUARANTINE)


def enforce_threshold(
    context: Context,
    dispatcher: Dispatcher | None = None,
    *,
    dry_run: bool = False,
    trigger: str = "python",
) -> RunOutcome:
    """``enforce`` that migrates each tier down to its high watermark (the threshold),
    not to its low watermark: what the original ``enforce_threshold()`` did."""
    tiers = {
        name: tier.model_copy(update={"low_watermark": tier.high_watermark})
        for name, tier in context.config.tiers.items()
    }
    at_threshold = dataclasses.replace(
        context, config=context.config.model_copy(update={"tiers": tiers})
    )
    return runs.run(
        at_threshold,
        command="enforce",
        kinds=("migrate",),
        dry_run=dry_run,
        trigger=trigger,
        dispatcher=dispatcher,
    )


def manage_lifecycle(
    context: Context, dispatcher: Dispatcher | None = None, *, trigger: str = "python"
) -> dict[str, Any]:
    """The storage service's daily task: :func:`enforce_threshold`, then :func:`retention`
    of 90 days; ``{"enforce_threshold": RUN, "apply_retention_policy": RUN}``, a step
    that could not run reported as ``{"run_id": None, "status": "refused", "reason"}``."""
    result: dict[str, Any] = {}
    steps: dict[str, Callable[[], RunOutcome]] = {
        "enforce_threshold": lambda: enforce_threshold(context, dispatcher, trigger=trigger),
        "apply_retention_policy": lambda: retention(context, dispatcher, trigger=trigger),
    }
    for step, work in steps.items():
        try:
            result[step] = work().as_json()
        except ShelflifeError as exc:
            LOG.warning("storage.manage_lifecycle %s: %s", step, exc.message)
            result[step] = {"run_id": None, "status": "refused", "reason": exc.message}
    return result


def retention(
    context: Context,
    dispatcher: Dispatcher | None = None,
    *,
    days: int = RETENTION_DAYS,
    yes: bool = False,
    trigger: str = "python",
) -> RunOutcome:
    """``expire`` of the cloud tier's objects older than ``days``: the original
    ``apply_retention_policy(days=90)``, with expire's re-checks, caps and ``on_expire``."""
    if days < 1:
        raise UsageError(f"retention must be at least one day, not {days}")
    rule = RuleConfig(
        id=f"retention-{days}d",
        tier=cloud_tier(context.config),
        action="expire",
        after=timedelta(days=days),
    )
    return runs.run(
        context,
        command="expire",
        kinds=("expire",),
        yes=yes,
        trigger=trigger,
        rules=[rule],
        dispatcher=dispatcher,
    )


def cloud_tier(config: Config) -> str:
    """The storage service's cloud: tier ``cloud``, else the first but the default."""
    tiers = list(config.tiers)
    if "cloud" in tiers:
        return "cloud"
    others = [tier for tier in tiers if tier != config.default_tier]
    return others[0] if others else tiers[0]


def bucket_names(config: Config) -> dict[str, str]:
    """Each tier's ``bucket`` label: its bucket or container, or the tier's name for a
    tier with no bucket (``file://``, ``memory://``) or one that shares its bucket."""
    names: dict[str, str] = {}
    for name, tier in config.tiers.items():
        names[name] = urlsplit(tier.url).netloc if tier.scheme in ("s3", "az", "gs") else name
    for name, bucket in list(names.items()):
        if list(names.values()).count(bucket) > 1:
            names[name] = name
    return names


def orphan_tiers(config: Config, bucket: str | None = None) -> list[str]:
    """The tiers ``cleanup_orphan_files(bucket=…)`` acts on: those whose bucket (or name)
    is ``bucket`` and that an enabled collect-orphans rule covers; with no bucket, every
    tier such a rule covers."""
    tiers = list(config.tiers)
    covered = [
        tier
        for tier in tiers
        if any(
            rule.enabled and rule.action == "collect-orphans" and tier in rule_tiers(rule, tiers)
            for rule in config.rules
        )
    ]
    if bucket is None:
        return covered
    labels = bucket_names(config)
    named = [tier for tier in tiers if bucket in (tier, labels[tier], _bucket_of(config, tier))]
    if not named:
        known = sorted(set(labels.values()))
        raise UsageError(f"no tier holds bucket {bucket!r}", hint=f"known: {', '.join(known)}")
    chosen = [tier for tier in named if tier in covered]
    if not chosen:
        raise UsageError(
            f"no collect-orphans rule covers bucket {bucket!r} (tier {', '.join(named)})",
            hint='add a [[rules]] entry with action = "collect-orphans" for that tier',
        )
    return chosen


def cleanup_orphan_files(
    context: Context,
    dispatcher: Dispatcher | None = None,
    *,
    dry_run: bool = False,
    bucket: str | None = None,
    yes: bool = False,
    trigger: str = "python",
) -> dict[str, Any]:
    """Collect the orphans of a bucket's tiers (every tier with a collect-orphans rule
    when ``bucket`` is None) through ``gc``; a refusal is reported, not raised.

    Returns ``{"dry_run", "status" ("ok"|"partial"|"refused"), "run_id", "plan_id",
    "reasons", "buckets": {BUCKET: {"tier", "orphans_found", "deleted", "quarantined",
    "failed", "orphan_size_gb", "freed_size_gb"}}, "total_orphans", "total_deleted",
    "total_failed", "total_size_gb", "execution_time_seconds"}``: in a dry run
    ``orphans_found`` counts what would be collected and nothing is deleted."""
    started = time.monotonic()
    config = context.config
    tiers = orphan_tiers(config, bucket)
    rules = None if bucket is None else _narrowed(config, tiers)
    labels = bucket_names(config)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "status": "ok",
        "run_id": None,
        "reasons": [],
        "buckets": {labels[tier]: _empty(tier) for tier in tiers},
    }
    try:
        outcome = runs.run(
            context,
            command="gc",
            kinds=("collect-orphans",),
            dry_run=dry_run,
            yes=yes,
            trigger=trigger,
            rules=rules,
            dispatcher=dispatcher,
        )
    except RefusedError as exc:
        report.update(status="refused", reasons=[exc.message])
        return _totals(report, started)
    report["run_id"] = outcome.run_id
    report["plan_id"] = outcome.plan.id  # a dry run's list: `shelflife gc --mark PLAN_ID`
    report["status"] = outcome.status
    report["reasons"] = [f"tier {refusal.tier}: {refusal.reason}" for refusal in outcome.refusals]
    actions = outcome.plan.iter_actions(ORPHAN_ACTIONS) if dry_run else outcome.actions
    for action in actions:
        if action.action not in ORPHAN_ACTIONS or action.tier not in labels:
            continue
        entry = report["buckets"].setdefault(labels[action.tier], _empty(action.tier))
        entry["orphans_found"] += 1
        entry["orphan_size_gb"] += action.bytes / GB
        if not dry_run:
            entry["deleted" if action.action == ActionKind.DELETE_ORPHAN else "quarantined"] += 1
            entry["freed_size_gb"] += action.bytes / GB
    for failure in outcome.failed:
        if failure.tier in labels:
            entry = report["buckets"].setdefault(labels[failure.tier], _empty(failure.tier))
            entry["failed"] += 1
            entry["orphans_found"] += 1
    return _totals(report, started)


def buckets_view(config: Config, stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stats JSON per bucket, as the MinIO clean-up's ``get_storage_stats()`` gave
    it: ``{BUCKET: {"tier", "total_objects", "referenced_objects", "orphan_objects",
    "total_size_gb", "orphan_size_gb", "disk_usage_gb", "orphan_percentage"}}``
    (reference figures None before the first reference snapshot)."""
    labels = bucket_names(config)
    view: dict[str, dict[str, Any]] = {}
    for tier, figures in stats.get("tiers", {}).items():
        if tier not in labels:
            continue
        objects = int(figures.get("objects") or 0)
        size = int(figures.get("bytes") or 0)
        orphans, orphan_bytes = figures.get("orphan_objects"), figures.get("orphan_bytes")
        view[labels[tier]] = {
            "tier": tier,
            "total_objects": objects,
            "referenced_objects": figures.get("referenced_objects"),
            "orphan_objects": orphans,
            "total_size_gb": round(size / GB, 6),
            "orphan_size_gb": None if orphan_bytes is None else round(orphan_bytes / GB, 6),
            "disk_usage_gb": round(int(figures.get("used_bytes", size) or 0) / GB, 6),
            "orphan_percentage": (
                None if orphans is None or not objects else round(100 * orphans / objects, 2)
            ),
        }
    return view


def _bucket_of(config: Config, tier: str) -> str | None:
    settings = config.tiers[tier]
    return urlsplit(settings.url).netloc if settings.scheme in ("s3", "az", "gs") else None


def _narrowed(config: Config, tiers: list[str]) -> list[RuleConfig]:
    """The enabled collect-orphans rules, each narrowed to the chosen tiers it covers."""
    every = list(config.tiers)
    chosen: list[RuleConfig] = []
    for rule in config.rules:
        if not rule.enabled or rule.action != "collect-orphans":
            continue
        for tier in rule_tiers(rule, every):
            if tier in tiers:
                chosen.append(rule if rule.tier == tier else rule.model_copy(update={"tier": tier}))
    return chosen


def _empty(tier: str) -> dict[str, Any]:
    return {
        "tier": tier,
        "orphans_found": 0,
        "deleted": 0,
        "quarantined": 0,
        "failed": 0,
        "orphan_size_gb": 0.0,
        "freed_size_gb": 0.0,
    }


def _totals(report: dict[str, Any], started: float) -> dict[str, Any]:
    buckets = report["buckets"].values()
    for entry in buckets:
        entry["orphan_size_gb"] = round(entry["orphan_size_gb"], 6)
        entry["freed_size_gb"] = round(entry["freed_size_gb"], 6)
    report["total_orphans"] = sum(entry["orphans_found"] for entry in buckets)
    report["total_deleted"] = sum(entry["deleted"] + entry["quarantined"] for entry in buckets)
    report["total_failed"] = sum(entry["failed"] for entry in buckets)
    report["total_size_gb"] = round(sum(entry["orphan_size_gb"] for entry in buckets), 6)
    report["execution_time_seconds"] = round(time.monotonic() - started, 3)
    return report
