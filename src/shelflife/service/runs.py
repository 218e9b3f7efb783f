"""The one pipeline: recover → scan → plan → execute → record.

``run`` is the main job; ``gc``, ``enforce`` and ``expire`` are ``run`` restricted to one
rule action (:data:`~shelflife.model.actions.COMMAND_ACTIONS`), with the same flags,
selection, caps, refusals and output. ``plan`` is the same pipeline stopped after
planning; ``apply`` executes a saved plan (a file, or a plan kept in the catalog) once.

- Every command scans first unless told not to (``scan=False``, ``--no-scan``); then a
  tier the rules act on that was never scanned is an error (exit 2), and one scanned
  longer ago than ``[executor] stale_scan`` is planned on with a warning.
- Deletions above ``max_delete`` / ``max_delete_bytes`` need ``yes`` (exit 3 otherwise,
  nothing done); a run stops itself once more than ``max_error_fraction`` of the actions
  it tried have failed.
- Every action is re-checked before it is taken (see :mod:`shelflife.engine.executor`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key
from shelflife.base.progress import Progress
from shelflife.base.units import FUTURE_SLACK, evaluation_instant, format_age, utcnow
from shelflife.catalog.history import History
from shelflife.catalog.lock import RunLock
from shelflife.catalog.plans import PlanStore
from shelflife.config.model import RuleConfig
from shelflife.engine import trust
from shelflife.engine.collect import purge_quarantine
from shelflife.engine.context import Context
from shelflife.engine.executor import Dispatcher, ErrorBudget, Executor, InProcess
from shelflife.engine.planning import make_plan, new_id, stored_plan
from shelflife.engine.scan import ScanResult, scan_tier
from shelflife.errors import RefusedError, ShelflifeError, StoreError, UsageError
from shelflife.model.actions import RULE_ACTIONS, ActionKind, Failure
from shelflife.model.outcome import RunOutcome
from shelflife.model.plan import Plan
from shelflife.model.selection import rule_tiers
from shelflife.service import notify
from shelflife.service.records import finish_run
from shelflife.service.recovery import recover_logged

LOG = logging.getLogger("shelflife.run")

# -- choosing ----------------------------------------------------------------------------


def choose_rules(
    context: Context, rule_id: str | None = None, kinds: Sequence[str] = RULE_ACTIONS
) -> list[RuleConfig]:
    """The enabled rules of ``kinds`` in file order, or the one named ``rule_id``."""
    rules = [r for r in context.config.rules if r.enabled and r.action in kinds]
    if rule_id is None:
        return rules
    chosen = [r for r in rules if r.id == rule_id]
    if not chosen:
        known = [r.id for r in context.config.rules if r.action in kinds]
        among = "" if tuple(kinds) == RULE_ACTIONS else f" among the {'/'.join(kinds)} rules"
        raise UsageError(
            f"no enabled rule with id {rule_id!r}{among}" + (f"; known: {known}" if known else ""),
            hint="rule ids are the 'id' of each [[rules]] entry in the configuration",
        )
    return chosen


# -- the inventory -----------------------------------------------------------------------


def scan(
    context: Context, tiers: Sequence[str] | None = None, progress: Progress | None = None
) -> list[ScanResult]:
    """Bring the inventory of ``tiers`` (default all) up to date with their stores."""
    return [
        run_sync(scan_tier(context.catalog, tier, context.store(tier), progress))
        for tier in tiers or list(context.config.tiers)
    ]


def freshen(
    context: Context,
    rules: Sequence[RuleConfig],
    *,
    scan_first: bool,
    progress: Progress | None,
    outcome: RunOutcome | None = None,
) -> tuple[dict[str, int], list[str]]:
    """Scan every tier, or with ``scan_first`` off check that the tiers ``rules`` act on
    were scanned: never scanned is an error (exit 2), scanned long ago a warning.

    In a run (``outcome`` given), a tier whose listing fails (retries spent) keeps its last
    inventory: planning on it is safe, as every action re-checks its object (HEAD) and its
    references before touching it; the failure is listed and the run is partial."""
    if not scan_first:
        return {}, _check_scanned(context, rules)
    scanned: dict[str, int] = {}
    for tier in context.config.tiers:
        try:
            (result,) = scan(context, [tier], progress)
            scanned[result.tier] = result.objects
        except StoreError as exc:
            if outcome is None:
                raise
            outcome.failed.append(Failure("scan", tier, "", f"listing failed: {exc.message}"))
    return scanned, []


def _check_scanned(context: Context, rules: Sequence[RuleConfig]) -> list[str]:
    tiers = list(context.config.tiers)
    acted_on = list(dict.fromkeys(t for rule in rules for t in rule_tiers(rule, tiers)))
    stale_after = context.config.executor.stale_scan
    now = utcnow()
    warnings = []
    for tier in acted_on:
        last = context.catalog.last_scan(tier)
        if last is None:
            raise UsageError(
                f"tier {tier} was never scanned, so its inventory is empty and a plan on it "
                "would find nothing",
                hint="run 'shelflife scan' first, or leave out --no-scan",
            )
        finished = last["finished_at"] or last["started_at"]
        if now - finished > stale_after:
            warnings.append(
                f"tier {tier} was last scanned {format_age(now - finished)} ago (more than "
                f"[executor] stale_scan); objects written since are not in this plan: run "
                "'shelflife scan' or leave out --no-scan"
            )
    return warnings


# -- planning ----------------------------------------------------------------------------


def plan(
    context: Context,
    *,
    rule: str | None = None,
    at: datetime | None = None,
    kinds: Sequence[str] = RULE_ACTIONS,
    scan_first: bool = True,
    progress: Progress | None = None,
    notify_above: bool = True,
) -> Plan:
    """The plan at ``at`` (now by default), saved in the catalog; changes nothing that
    matters (I4). ``notify_above`` off: no ``plan-above`` notification (a dashboard's
    preview)."""
    now = evaluation_instant(at, dry_run=True, what="would happen")
    rules = choose_rules(context, rule, kinds)
    _, warnings = freshen(context, rules, scan_first=scan_first, progress=progress)
    made = make_plan(context, now, rules, progress, warnings)
    if notify_above:
        notify.plan_made(context, made, command="plan", dry_run=True)
    return made


# -- running -----------------------------------------------------------------------------


def run(
    context: Context,
    *,
    command: str = "run",
    kinds: Sequence[str] = RULE_ACTIONS,
    dry_run: bool = False,
    rule: str | None = None,
    at: datetime | None = None,
    yes: bool = False,
    scan_first: bool = True,
    trigger: str = "cli",
    rules: list[RuleConfig] | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    dispatcher: Dispatcher | None = None,
) -> RunOutcome:
    """Recover, scan, plan and execute (DESIGN 5.2 ``run``); a dry run stops after planning.

    ``rules`` replaces the configuration's rules for this run (the Python API's ad-hoc
    retention); otherwise the enabled rules of ``kinds`` (or the one named ``rule``)."""
    now = evaluation_instant(at, dry_run=dry_run, what="would happen")
    extra = rules or []
    chosen = rules if rules is not None else choose_rules(context, rule, kinds)
    if dry_run:
        scanned, warnings = freshen(context, chosen, scan_first=scan_first, progress=progress)
        outcome = RunOutcome(command, make_plan(context, now, chosen, progress, warnings))
        outcome.dry_run = True
        outcome.scanned = scanned
        notify.plan_made(context, outcome.plan, command=command, dry_run=True)
        return outcome
    run_id = run_id or new_id(command, utcnow())
    history = History(context.catalog.engine)
    with _lease(context, command, run_id, dispatcher) as lease:
        history.close_interrupted(utcnow())
        history.start(run_id, command=command, trigger=trigger, now=utcnow())
        outcome = RunOutcome(command, Plan(now=now), run_id=run_id)
        try:
            outcome.recovered = recover_logged(context, progress, command=command, run_id=run_id)
            outcome.scanned, warnings = freshen(
                context, chosen, scan_first=scan_first, progress=progress, outcome=outcome
            )
            started = utcnow()
            outcome.plan = make_plan(context, now, chosen, progress, warnings)
            notify.plan_made(context, outcome.plan, command=command, dry_run=False)
            _execute(
                context,
                outcome,
                yes=yes,
                progress=progress,
                extra_rules=extra,
                dispatcher=dispatcher,
                lease=lease,
            )
            lost = lease.why_lost()
            if lost and not outcome.stopped:
                outcome.stopped = lost
            if not lost and rules is None and any(r.action == "collect-orphans" for r in chosen):
                # quarantine past its days (what this run quarantined is not: it is newer)
                outcome.actions += run_sync(purge_quarantine(context, started))
            _recount(context, outcome)
        except BaseException as exc:
            _record(context, outcome, error=exc)
            raise
        _record(context, outcome)
    return outcome


def apply(
    context: Context,
    plan_body: Plan,
    *,
    yes: bool = False,
    trigger: str = "cli",
    command: str = "apply",
    kinds: Sequence[str] = RULE_ACTIONS,
    progress: Progress | None = None,
    dispatcher: Dispatcher | None = None,
) -> RunOutcome:
    """Apply a saved plan once (its actions of ``kinds``), re-checking every action."""
    if plan_body.now > utcnow() + FUTURE_SLACK:
        raise UsageError(
            f"plan {plan_body.id or '(no id)'} was evaluated at {plan_body.now.isoformat()}, "
            "in the future; such a plan is for review only",
            hint="make a plan for now with 'shelflife plan -o plan.json' and apply that",
        )
    history = History(context.catalog.engine)
    if not plan_body.id:
        raise UsageError("the plan has no plan_id", hint="make it with 'shelflife plan -o FILE'")
    known = history.plan_status(plan_body.id)
    if known is None:
        raise UsageError(
            f"plan {plan_body.id} was not made with this catalog",
            hint="make the plan with the same configuration that applies it",
        )
    if known[0] == "building":
        raise UsageError(
            f"plan {plan_body.id} is still being made, or its planning was interrupted",
            hint="make a fresh plan with 'shelflife plan -o plan.json'",
        )
    if known[0] != "open":
        raise UsageError(
            f"plan {plan_body.id} was already applied (run {known[1]}); a plan applies once",
            hint="make a fresh plan with 'shelflife plan -o plan.json'",
        )
    if tuple(kinds) != RULE_ACTIONS:
        others = sorted(
            name for name in plan_body.counts if ActionKind(name).rule_action not in kinds
        )
        if others:
            raise UsageError(
                f"plan {plan_body.id} also holds {', '.join(others)} actions; a plan applies "
                f"once and whole, so '{command}' will not take only its part",
                hint=f"apply it whole with 'shelflife apply {plan_body.id}', or make a plan "
                f"of the {command} rules alone with 'shelflife {command} --dry-run'",
            )
    run_id = new_id(command, utcnow())
    with _lease(context, command, run_id, dispatcher) as lease:
        history.close_interrupted(utcnow())
        history.start(run_id, command=command, trigger=trigger, now=utcnow(), plan_id=plan_body.id)
        outcome = RunOutcome(command, plan_body, run_id=run_id)
        try:
            outcome.recovered = recover_logged(context, progress, command=command, run_id=run_id)
            _execute(
                context, outcome, yes=yes, progress=progress, dispatcher=dispatcher, lease=lease
            )
            _recount(context, outcome)
        except BaseException as exc:
            _record(context, outcome, error=exc)
            raise
        _record(context, outcome)
    return outcome


def saved_plan(context: Context, plan_id: str) -> Plan:
    """A plan kept in the catalog, by id (``apply PLAN_ID``, ``gc --mark PLAN_ID``)."""
    found = stored_plan(context, plan_id)
    if found is None:
        raise UsageError(
            f"no plan {plan_id!r} in the catalog",
            hint="plan ids are printed by 'shelflife plan' and every --dry-run "
            "(the newest 20 plans are kept)",
        )
    return found


def read_plan_file(path: Path) -> Plan:
    """A plan written by ``shelflife plan -o FILE``; clear errors for anything else."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no plan file at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{path} is not a plan file: {exc}", hint="write one with 'shelflife plan -o FILE'"
        ) from None
    try:
        plan_body = Plan.from_json(body)
        for position, action in enumerate(plan_body.iter_actions()):
            if action.action not in ActionKind.__members__.values() or (
                action.action == ActionKind.PURGE_QUARANTINE
            ):
                raise ValueError(f"actions[{position}] is {action.action!r}, no action kind")
            validate_key(action.key)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{path} is not a plan file: {type(exc).__name__} {exc}",
            hint="write one with 'shelflife plan -o FILE'",
        ) from None
    return plan_body


def _recount(context: Context, outcome: RunOutcome) -> None:
    """After a run or apply that acted: count again what the references name, where its
    plan was marked by merge (which leaves no snapshot whose rows stats could follow to
    the objects' new tiers). A recount that fails is logged; the run stands as it went."""
    if outcome.plan.marking != "merge" or not (outcome.actions or any(outcome.recovered.values())):
        return
    try:
        trust.refresh(context, context.sources())
    except ShelflifeError as exc:
        LOG.warning(
            "references not counted after %s (stats keep the last count): %s",
            outcome.run_id,
            exc.message,
        )


def _record(context: Context, outcome: RunOutcome, error: BaseException | None = None) -> None:
    assert outcome.run_id is not None
    if error is None:
        status = outcome.status
        message = outcome.refused or outcome.stopped
    elif isinstance(error, RefusedError):
        status, message = "refused", error.message
    else:
        status = "failed"
        message = error.message if isinstance(error, ShelflifeError) else repr(error)
    finish_run(
        context,
        outcome.run_id,
        outcome.command,
        status,
        outcome.actions,
        outcome.skipped,
        outcome.failed,
        error=message,
        plan_id=outcome.plan.id or None,
        recovered=any(outcome.recovered.values()),
    )
    notify.run_ended(context, outcome, status, message)
    if outcome.plan.id and outcome.claimed:
        PlanStore(context.catalog.engine, outcome.plan.id).drop()  # applied: needed no more


def _lease(context: Context, command: str, run_id: str, dispatcher: Dispatcher | None) -> RunLock:
    """The run lease of a run or apply; one whose batches go to workers says so."""
    fanned_out = dispatcher is not None and not isinstance(dispatcher, InProcess)
    return context.run_lock(f"shelflife {command}", run_id=run_id, fanned_out=fanned_out)


def _execute(
    context: Context,
    outcome: RunOutcome,
    *,
    yes: bool,
    progress: Progress | None,
    extra_rules: list[RuleConfig] | None = None,
    dispatcher: Dispatcher | None = None,
    lease: RunLock | None = None,
) -> None:
    plan_body = outcome.plan
    settings = context.config.executor
    count, size = plan_body.deletions()
    over = []
    if count > settings.max_delete:
        over.append(f"{count} objects (max_delete = {settings.max_delete})")
    if settings.max_delete_bytes is not None and size > settings.max_delete_bytes:
        over.append(f"{size} bytes (max_delete_bytes = {settings.max_delete_bytes})")
    if over and not yes:
        raise RefusedError(
            "the plan deletes " + " and ".join(over) + "; nothing was done",
            hint="review it with 'shelflife plan', then run again with --yes",
        )
    if plan_body.id and not History(context.catalog.engine).claim_plan(
        plan_body.id, outcome.run_id or "", utcnow()
    ):
        raise UsageError(f"plan {plan_body.id} was already applied; a plan applies once")
    outcome.claimed = bool(plan_body.id)
    outcome.skipped += plan_body.iter_skipped()
    executor = Executor(
        context,
        outcome,
        progress,
        extra_rules,
        halt=None if lease is None else lease.why_lost,
        fence=None if lease is None else lease.fence,
    )
    budget = ErrorBudget(settings.max_error_fraction, plan_body.size)
    (dispatcher or InProcess()).dispatch(
        executor, executor.batches(plan_body.iter_actions()), budget
    )
