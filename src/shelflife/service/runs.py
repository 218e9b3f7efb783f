"""The lifecycle service: plan the rules, apply a plan, and ``run`` (recover, scan, plan,
apply) — the main job. Runs are recorded in the catalog's run history.

``apply`` re-checks every action before taking it (the executors do: the object is
unchanged, still selected by its rule, not pinned or leased, unreferenced for deletions)
and skips what changed. A plan can be applied once. Deletions above the executor's
``max_delete`` / ``max_delete_bytes`` need ``yes``; a run stops itself once more than
``max_error_fraction`` of the actions it tried have failed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key
from shelflife.base.logs import log_run
from shelflife.base.progress import NullProgress, Progress
from shelflife.base.units import FUTURE_SLACK, evaluation_instant, utcnow
from shelflife.catalog.history import History
from shelflife.catalog.journal import Candidate
from shelflife.catalog.ledger import MarkItem
from shelflife.catalog.lock import RunLock
from shelflife.catalog.view import CatalogInventory, ObjectView, TierState
from shelflife.config.model import RuleConfig
from shelflife.engine.expire import Expirer, ExpireResult
from shelflife.engine.planner import Plan, matches, rule_tiers
from shelflife.engine.planner import plan as make_plan
from shelflife.errors import RefusedError, ShelflifeError, StoreError, UsageError
from shelflife.model.actions import Action, Failure, Refusal, Skip, totals
from shelflife.references.sources import SourceUnreadable
from shelflife.stores.transfer import head_many

if TYPE_CHECKING:
    from shelflife.service.shelf import Shelf

T = TypeVar("T")

ACTION_KINDS = ("migrate", "expire", "collect-orphans")
_RULE_ACTION = {
    "migrate": "migrate",
    "expire": "expire",
    "delete-orphan": "collect-orphans",
    "quarantine": "collect-orphans",
}


def new_id(prefix: str, now: datetime) -> str:
    return f"{prefix}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass
class RunOutcome:
    """What a run did; a dry run carries only its plan."""

    command: str
    plan: Plan
    dry_run: bool = False
    run_id: str | None = None
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)
    scanned: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    refused: str | None = None

    @property
    def refusals(self) -> list[Refusal]:
        return self.plan.refusals

    @property
    def status(self) -> str:
        if self.refused or (self.refusals and not self.failed):
            return "refused"
        if self.failed or self.stopped:
            return "partial"
        return "ok"

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "partial": 1, "refused": 3}[self.status]

    def as_json(self) -> dict[str, Any]:
        if self.dry_run:
            return self.plan.as_json()
        body: dict[str, Any] = {
            "run_id": self.run_id,
            "status": self.status,
            "command": self.command,
            "plan_id": self.plan.id,
            "now": self.plan.now.isoformat(),
            "actions": [a.as_json() for a in self.actions],
            "skipped": [s.as_json() for s in self.skipped],
            "totals": totals(self.actions),
            "failed": [f.as_json() for f in self.failed],
            "refusals": [r.as_json() for r in self.refusals],
            "rows": self.rows,
            "recovered": self.recovered,
            "notes": self.plan.notes,
        }
        if self.scanned:
            body["scanned"] = self.scanned
        if self.stopped:
            body["stopped"] = self.stopped
        if self.refused:
            body["reason"] = self.refused
        return body


# -- planning ----------------------------------------------------------------------------


def choose_rules(
    shelf: Shelf, rule_id: str | None = None, kinds: tuple[str, ...] = ACTION_KINDS
) -> list[RuleConfig]:
    """The enabled rules of ``kinds`` in file order, or the one named ``rule_id``."""
    rules = [r for r in shelf.config.rules if r.enabled and r.action in kinds]
    if rule_id is None:
        return rules
    chosen = [r for r in rules if r.id == rule_id]
    if not chosen:
        known = [r.id for r in shelf.config.rules if r.action in kinds]
        raise UsageError(
            f"no enabled rule with id {rule_id!r}" + (f"; known: {known}" if known else ""),
            hint="rule ids are the 'id' of each [[rules]] entry in the configuration",
        )
    return chosen


def tier_states(shelf: Shelf) -> dict[str, TierState]:
    states = {}
    for usage in shelf.usage():
        states[usage.name] = TierState(
            name=usage.name,
            used=usage.used_bytes,
            capacity=usage.capacity,
            high=usage.high_watermark,
            low=usage.low_watermark,
            objects=shelf.ledger.objects_in_tier(usage.name),
            versioned=shelf.versioned(usage.name),
        )
    return states


def build_plan(
    shelf: Shelf, now: datetime, rules: list[RuleConfig], progress: Progress | None = None
) -> Plan:
    """Plan ``rules`` at ``now`` over the catalog, after a fresh reference snapshot when a
    rule deletes or references are declared. Refuses (exit 3) when no reference can be
    read; a rule on a tier whose references cannot be trusted is refused in the plan."""
    snapshot_id = None
    blocks: dict[tuple[str, str], str] = {}
    all_tiers = list(shelf.config.tiers)
    deleting = [r for r in rules if r.action in ("expire", "collect-orphans")]
    if deleting or (rules and shelf.config.references):
        # Every rule that removes objects from a tier (a migration too: its rewrite must
        # find every row) needs references it can trust: read them all, fresh.
        collector = shelf.collector()
        tiers = sorted({t for r in deleting for t in rule_tiers(r, all_tiers)})
        if deleting:
            collector.check_sources(
                tiers, need_sources=any(r.action == "collect-orphans" for r in deleting)
            )
        snapshot_id, report = collector.snapshot(now, progress)
        collecting = sorted(
            {t for r in rules if r.action == "collect-orphans" for t in rule_tiers(r, all_tiers)}
        )
        blocks = collector.blocks(report, collecting)
        shelf.ledger.purge_expired_leases(now)
    inventory = CatalogInventory(
        shelf.catalog.engine, tier_states(shelf), snapshot_id=snapshot_id, now=now
    )
    result = make_plan(
        rules,
        inventory,
        now,
        tiers=all_tiers,
        references=shelf.config.references,
        blocks=blocks,
    )
    result.id = new_id("plan", utcnow())
    count = len(result.actions)
    History(shelf.catalog.engine).save_plan(
        result.id,
        created_at=utcnow(),
        evaluated_at=now,
        actions=count,
        size=sum(a.bytes for a in result.actions),
    )
    return result


def plan(
    shelf: Shelf,
    *,
    rule: str | None = None,
    at: datetime | None = None,
    kinds: tuple[str, ...] = ACTION_KINDS,
    progress: Progress | None = None,
) -> Plan:
    """The plan at ``at`` (now by default); changes nothing that matters (I4)."""
    now = evaluation_instant(at, dry_run=True, what="would happen")
    return build_plan(shelf, now, choose_rules(shelf, rule, kinds), progress)


# -- running -----------------------------------------------------------------------------


def run(
    shelf: Shelf,
    *,
    command: str = "run",
    kinds: tuple[str, ...] = ACTION_KINDS,
    dry_run: bool = False,
    rule: str | None = None,
    at: datetime | None = None,
    yes: bool = False,
    scan: bool = True,
    trigger: str = "cli",
    rules: list[RuleConfig] | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Recover, scan, plan and apply (DESIGN 5.2 ``run``); a dry run stops after planning.

    ``rules`` replaces the configuration's rules for this run (the Python API's ad-hoc
    retention); otherwise the enabled rules of ``kinds`` (or the one named ``rule``)."""
    now = evaluation_instant(at, dry_run=dry_run, what="would happen")
    extra = rules or []
    rules = rules if rules is not None else choose_rules(shelf, rule, kinds)
    if dry_run:
        scanned = _scan(shelf, progress) if scan else {}
        outcome = RunOutcome(command, build_plan(shelf, now, rules, progress), dry_run=True)
        outcome.scanned = scanned
        return outcome
    run_id = run_id or new_id(command, utcnow())
    history = History(shelf.catalog.engine)
    with RunLock(shelf.catalog, f"shelflife {command}"):
        history.close_interrupted(utcnow())
        history.start(run_id, command=command, trigger=trigger, now=utcnow())
        outcome = RunOutcome(command, Plan(now=now), run_id=run_id)
        try:
            outcome.recovered = shelf.recover_unlocked(progress)
            if scan:
                outcome.scanned = _scan(shelf, progress, outcome)
            outcome.plan = build_plan(shelf, now, rules, progress)
            _execute(shelf, outcome, yes=yes, progress=progress, extra_rules=extra)
        except BaseException as exc:
            _record(shelf, outcome, error=exc)
            raise
        _record(shelf, outcome)
    return outcome


def apply(
    shelf: Shelf,
    plan_body: Plan,
    *,
    yes: bool = False,
    trigger: str = "cli",
    progress: Progress | None = None,
) -> RunOutcome:
    """Apply a saved plan once, re-checking every action."""
    if plan_body.now > utcnow() + FUTURE_SLACK:
        raise UsageError(
            f"plan {plan_body.id or '(no id)'} was evaluated at {plan_body.now.isoformat()}, "
            "in the future; such a plan is for review only",
            hint="make a plan for now with 'shelflife plan -o plan.json' and apply that",
        )
    history = History(shelf.catalog.engine)
    if plan_body.id:
        known = history.plan_status(plan_body.id)
        if known is None:
            raise UsageError(
                f"plan {plan_body.id} was not made with this catalog",
                hint="make the plan with the same configuration that applies it",
            )
        if known[0] != "open":
            raise UsageError(
                f"plan {plan_body.id} was already applied (run {known[1]}); a plan applies once",
                hint="make a fresh plan with 'shelflife plan -o plan.json'",
            )
    else:
        raise UsageError("the plan has no plan_id", hint="make it with 'shelflife plan -o FILE'")
    run_id = new_id("apply", utcnow())
    with RunLock(shelf.catalog, "shelflife apply"):
        history.close_interrupted(utcnow())
        history.start(run_id, command="apply", trigger=trigger, now=utcnow(), plan_id=plan_body.id)
        outcome = RunOutcome("apply", plan_body, run_id=run_id)
        try:
            outcome.recovered = shelf.recover_unlocked(progress)
            _execute(shelf, outcome, yes=yes, progress=progress)
        except BaseException as exc:
            _record(shelf, outcome, error=exc)
            raise
        _record(shelf, outcome)
    return outcome


Summary = tuple[str, list[Action], list[Skip], list[Failure]]


def recorded(
    shelf: Shelf,
    command: str,
    trigger: str,
    call: Callable[[str], T],
    summary: Callable[[T], Summary],
) -> T:
    """Run ``call(run_id)`` and record it in the run history: for the commands that keep
    their own engines (``gc``, ``enforce``). ``summary`` gives the status, the actions
    taken, the objects skipped and the failures."""
    run_id = new_id(command, utcnow())
    history = History(shelf.catalog.engine)
    history.start(run_id, command=command, trigger=trigger, now=utcnow())
    try:
        result = call(run_id)
    except BaseException as exc:
        status = "refused" if isinstance(exc, RefusedError) else "failed"
        message = exc.message if isinstance(exc, ShelflifeError) else repr(exc)
        finish_run(shelf, run_id, command, status, error=message)
        raise
    status, actions, skipped, failed = summary(result)
    finish_run(shelf, run_id, command, status, actions, skipped, failed)
    return result


def finish_run(
    shelf: Shelf,
    run_id: str,
    command: str,
    status: str,
    actions: list[Action] | None = None,
    skipped: list[Skip] | None = None,
    failed: list[Failure] | None = None,
    *,
    error: str | None = None,
    plan_id: str | None = None,
) -> None:
    """Record a run's end (history and counters, one transaction), log one line per
    action outcome, and refresh the stored stats that /metrics serves."""
    from shelflife.base.logs import log_outcomes
    from shelflife.service import metrics

    actions, skipped, failed = actions or [], skipped or [], failed or []
    log_outcomes(run_id, actions, skipped, failed)
    History(shelf.catalog.engine).finish(
        run_id,
        status=status,
        now=utcnow(),
        totals=totals(actions),
        failures=[f.as_json() for f in failed],
        error=error,
        plan_id=plan_id,
        increments=metrics.increments(shelf.config, command, status, actions, skipped, failed),
    )
    log_run(run_id, status, actions, failed, error)
    try:
        metrics.refresh_stats(shelf)
    except ShelflifeError as exc:  # the run is recorded; stale figures are no reason to fail
        import logging

        logging.getLogger("shelflife").warning("stats not refreshed after %s: %s", run_id, exc)


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
        for position, action in enumerate(plan_body.actions):
            if action.action not in _RULE_ACTION:
                raise ValueError(f"actions[{position}] is {action.action!r}, no action kind")
            validate_key(action.key)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{path} is not a plan file: {type(exc).__name__} {exc}",
            hint="write one with 'shelflife plan -o FILE'",
        ) from None
    return plan_body


def _scan(
    shelf: Shelf, progress: Progress | None, outcome: RunOutcome | None = None
) -> dict[str, int]:
    """Scan every tier. In a run, a tier whose listing fails (retries spent) keeps its
    last inventory: planning on it is safe, as every action re-checks its object (HEAD)
    and its references before touching it; the failure is listed and the run is partial."""
    scanned = {}
    for tier in shelf.config.tiers:
        try:
            (result,) = shelf.scan([tier], progress=progress)
        except StoreError as exc:
            if outcome is None:
                raise
            outcome.failed.append(Failure("scan", tier, "", f"listing failed: {exc.message}"))
            continue
        scanned[result.tier] = result.objects
    return scanned


def _record(shelf: Shelf, outcome: RunOutcome, error: BaseException | None = None) -> None:
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
        shelf,
        outcome.run_id,
        outcome.command,
        status,
        outcome.actions,
        outcome.skipped,
        outcome.failed,
        error=message,
        plan_id=outcome.plan.id or None,
    )


def _execute(
    shelf: Shelf,
    outcome: RunOutcome,
    *,
    yes: bool,
    progress: Progress | None,
    extra_rules: list[RuleConfig] | None = None,
) -> None:
    plan_body = outcome.plan
    executor = shelf.config.executor
    count, size = plan_body.deletions()
    over = []
    if count > executor.max_delete:
        over.append(f"{count} objects (max_delete = {executor.max_delete})")
    if executor.max_delete_bytes is not None and size > executor.max_delete_bytes:
        over.append(f"{size} bytes (max_delete_bytes = {executor.max_delete_bytes})")
    if over and not yes:
        raise RefusedError(
            "the plan deletes " + " and ".join(over) + "; nothing was done",
            hint="review it with 'shelflife plan', then run again with --yes",
        )
    if plan_body.id and not History(shelf.catalog.engine).claim_plan(
        plan_body.id, outcome.run_id or "", utcnow()
    ):
        raise UsageError(f"plan {plan_body.id} was already applied; a plan applies once")
    outcome.skipped += plan_body.skipped
    progress = progress or NullProgress()
    runner = _Executor(shelf, outcome, progress, extra_rules or [])
    if executor.backend == "celery":
        from shelflife.engine.fanout import dispatch

        dispatch(shelf, outcome, list(runner.batches(plan_body.actions)))
        return
    total = len(plan_body.actions)
    attempted = 0
    for batch in runner.batches(plan_body.actions):
        runner.take(batch)
        attempted += len(batch)
        if outcome.stopped:
            return
        failed = len(outcome.failed)
        if failed and failed / attempted > executor.max_error_fraction and attempted < total:
            outcome.stopped = (
                f"{failed} of {attempted} actions failed (more than max_error_fraction "
                f"{executor.max_error_fraction:.0%}); {total - attempted} actions not attempted"
            )
            return


class _Executor:
    """Takes a plan's actions batch by batch, each by the engine its action belongs to."""

    def __init__(
        self, shelf: Shelf, outcome: RunOutcome, progress: Progress, extra: list[RuleConfig]
    ) -> None:
        self.shelf = shelf
        self.outcome = outcome
        self.progress = progress
        self.now = utcnow()
        self.rules = {rule.id: rule for rule in [*shelf.config.rules, *extra]}
        self._migrator: Any = None
        self._collector: Any = None
        self._expirer: Expirer | None = None

    def batches(self, actions: list[Action]) -> Iterator[list[Action]]:
        """Runs of the same (action, rule, tier, to), in plan order, cut to batch size."""
        size = self.shelf.config.executor.batch_size
        for _, group in groupby(actions, key=lambda a: (a.action, a.rule, a.tier, a.to)):
            items = list(group)
            for start in range(0, len(items), size):
                yield items[start : start + size]

    def take(self, batch: list[Action]) -> None:
        first = batch[0]
        eligible = [item for item in batch if self._still_selected(item)]
        if not eligible:
            return
        self.progress.start(f"{first.action} on {first.tier}", total=len(eligible))
        try:
            if first.action == "migrate":
                self._migrate(eligible)
            elif first.action == "expire":
                self._expire(eligible)
            else:
                self._collect(eligible)
            self.progress.advance(len(eligible), sum(item.bytes for item in eligible))
        except SourceUnreadable as exc:
            # References can no longer be verified: nothing more may be deleted or repointed
            # on their account. What this batch left half done, recovery completes.
            self._fail(eligible, exc.message)
            self.outcome.stopped = f"stopped: {exc.message}"
        except StoreError as exc:  # retries spent: this batch failed, the next may not
            self._fail(eligible, exc.message)
        finally:
            self.progress.finish()

    def _fail(self, batch: list[Action], message: str) -> None:
        settled = {(item.tier, item.key) for item in self.outcome.actions}
        settled |= {(item.tier, item.key) for item in self.outcome.failed}
        self.outcome.failed += [
            Failure(item.rule, item.tier, item.key, message)
            for item in batch
            if (item.tier, item.key) not in settled
        ]

    def _still_selected(self, item: Action) -> bool:
        """The action's rule still exists, acts the same way, and selects the object."""
        rule = self.rules.get(item.rule)
        reason = None
        if rule is None or not rule.enabled:
            reason = "its rule is gone or disabled"
        elif _RULE_ACTION.get(item.action) != rule.action:
            reason = "its rule now does something else"
        elif item.tier not in rule_tiers(rule, list(self.shelf.config.tiers)):
            reason = "its rule no longer covers this tier"
        elif item.action == "migrate" and item.to != rule.to:
            reason = "its rule now migrates elsewhere"
        else:
            row = self.shelf.catalog.get(item.tier, item.key)
            if row is None:
                reason = "no longer in the inventory"
            else:
                tags = json.loads(row.tags) if row.tags else None
                view = ObjectView(item.key, row.size, row.modified_at, tags=tags)
                age = rule.grace if rule.action == "collect-orphans" else rule.after
                cutoff = None if age is None else self.outcome.plan.now - age
                if not matches(rule, view) or (cutoff is not None and row.modified_at >= cutoff):
                    reason = "its rule no longer selects it"
        if reason is None:
            return True
        self.outcome.skipped.append(Skip(item.rule, item.tier, item.key, reason))
        return False

    def _migrate(self, batch: list[Action]) -> None:
        from shelflife.service.recovery import migrator

        if self._migrator is None:
            self._migrator = migrator(self.shelf)
        tier, rule, to = batch[0].tier, batch[0].rule, batch[0].to
        assert to is not None
        store = self.shelf.store(tier)
        protected = self.shelf.ledger.protected_keys(tier, [a.key for a in batch], self.now)
        candidates = []
        errors: dict[str, ShelflifeError] = {}
        heads = run_sync(head_many(store, [item.key for item in batch], errors=errors))
        for item in batch:
            reason = None
            head = heads.get(item.key)
            if item.key in errors:
                self.outcome.failed.append(Failure(rule, tier, item.key, errors[item.key].message))
                continue
            if head is None:
                self.shelf.catalog.forget(tier, [item.key])
                reason = "already gone"
            elif head[0] != item.bytes or (item.etag and head[1] != item.etag):
                reason = "changed since it was planned"
            if reason is None and item.key in protected:
                reason = "pinned or leased"
            if reason is not None:
                self.outcome.skipped.append(Skip(rule, tier, item.key, reason))
                continue
            row = self.shelf.catalog.get(tier, item.key)
            candidates.append(
                Candidate(
                    item.key,
                    item.bytes,
                    item.modified or self.now,
                    None,
                    None if row is None else row.checksum,
                )
            )
        if not candidates:
            return
        result = run_sync(
            self._migrator.migrate(rule, tier, to, candidates, None, self.outcome.run_id)
        )
        self.outcome.actions += [
            Action("migrate", m.rule, m.src, m.key, m.size, to=m.dst) for m in result.moved
        ]
        self.outcome.failed += [Failure(rule, t, k, e) for t, k, e in result.failed]

    def _expire(self, batch: list[Action]) -> None:
        if self._expirer is None:
            shelf = self.shelf
            self._expirer = Expirer(
                shelf.config,
                shelf.catalog,
                shelf.ledger,
                shelf.locator,
                shelf.sources(),
                shelf.store,
            )
        result = ExpireResult()
        run_sync(self._expirer.expire(batch[0].tier, batch, self.now, result))
        self.outcome.actions += result.actions
        self.outcome.skipped += result.skipped
        self.outcome.failed += result.failed
        for label, changed in result.rows.items():
            self.outcome.rows[label] = self.outcome.rows.get(label, 0) + changed

    def _collect(self, batch: list[Action]) -> None:
        if self._collector is None:
            self._collector = self.shelf.collector()
        rule = self.rules[batch[0].rule]
        items = [
            MarkItem(item.key, item.bytes, item.modified or self.now, item.etag) for item in batch
        ]
        result = run_sync(self._collector.sweep_items(rule, batch[0].tier, items, self.now))
        self.outcome.actions += result.actions
        self.outcome.skipped += result.skipped
        self.outcome.failed += result.failed
