"""Service functions for migration: ``enforce`` (the migrate rules), ``recover``, recall.

Every mutating run holds the catalog's run lock and first recovers whatever an earlier
run left unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shelflife.base.aio import run_sync
from shelflife.base.progress import Progress
from shelflife.base.units import evaluation_instant
from shelflife.catalog.journal import Candidate, Journal
from shelflife.catalog.ledger import CandidateFilter
from shelflife.catalog.lock import RunLock
from shelflife.config.model import RuleConfig
from shelflife.engine.migrate import MigrateResult, Migrator, choose_for_watermark
from shelflife.errors import RefusedError, UsageError
from shelflife.model.locations import Location

if TYPE_CHECKING:
    from shelflife.service.shelf import Shelf


@dataclass
class PlannedMove:
    rule: str
    tier: str
    to: str
    candidate: Candidate

    def as_json(self) -> dict[str, Any]:
        return {
            "action": "migrate",
            "rule": self.rule,
            "tier": self.tier,
            "key": self.candidate.key,
            "bytes": self.candidate.size,
            "to": self.to,
        }


@dataclass
class EnforceOutcome:
    now: datetime
    dry_run: bool
    planned: list[PlannedMove] = field(default_factory=list)
    result: MigrateResult | None = None
    recovered: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        if self.dry_run or self.result is None:
            actions = [move.as_json() for move in self.planned]
            failed: list[dict[str, str]] = []
        else:
            actions = [
                {
                    "action": "migrate",
                    "rule": m.rule,
                    "tier": m.src,
                    "key": m.key,
                    "bytes": m.size,
                    "to": m.dst,
                }
                for m in self.result.moved
            ]
            failed = [{"tier": t, "key": k, "error": e} for t, k, e in self.result.failed]
        totals = {"migrate": {"objects": len(actions), "bytes": sum(a["bytes"] for a in actions)}}
        body: dict[str, Any] = {
            "now": self.now.isoformat(),
            "actions": actions,
            "skipped": [],
            "totals": totals if actions else {},
        }
        if self.dry_run:
            return body
        moved = (
            {}
            if self.result is None
            else {f"{src}->{dst}": size for (src, dst), size in self.result.bytes_by_pair.items()}
        )
        return {
            "run_id": None if self.result is None else self.result.run_id,
            "status": "partial" if failed else "ok",
            **body,
            "failed": failed,
            "moved_bytes": moved,
            "recovered": self.recovered,
        }


def migrator(shelf: Shelf) -> Migrator:
    executor = shelf.config.executor
    return Migrator(
        shelf.config,
        shelf.catalog,
        Journal(shelf.catalog.engine),
        shelf.locator,
        shelf.sources(),
        shelf.store,
        concurrency=executor.concurrency,
        batch_size=executor.batch_size,
    )


def plan_migrations(shelf: Shelf, now: datetime, rule_id: str | None = None) -> list[PlannedMove]:
    """The moves the migrate rules call for at ``now``, in rule order."""
    rules = [r for r in shelf.config.rules if r.action == "migrate" and r.enabled]
    if rule_id is not None:
        rules = [r for r in rules if r.id == rule_id]
        if not rules:
            raise UsageError(f"no migrate rule with id {rule_id!r}")
    if rules and shelf.config.references:
        # The same trust rule as every run: a migration must be able to find every row
        # that names what it moves (DESIGN I1, I8).
        collector = shelf.collector()
        _, report = collector.snapshot(now)
        blocks = collector.blocks(report)
        for rule in rules:
            for tier in list(shelf.config.tiers) if rule.tier == "*" else [rule.tier]:
                reason = blocks.get(("migrate", tier))
                if reason is not None and tier != rule.to:
                    raise RefusedError(
                        f"rule {rule.id!r} on tier {tier}: {reason}",
                        hint="nothing was moved; 'shelflife check' lists what the references hold",
                    )
    journal = Journal(shelf.catalog.engine)
    usage = {tier.name: tier for tier in shelf.usage()}
    taken: set[tuple[str, str]] = set()
    planned: list[PlannedMove] = []
    for rule in rules:
        tiers = list(shelf.config.tiers) if rule.tier == "*" else [rule.tier]
        for tier in tiers:
            if tier == rule.to:
                continue
            moves = _plan_rule(rule, tier, now, journal, usage[tier], taken)
            planned += moves
            taken.update((tier, move.candidate.key) for move in moves)
            freed = sum(move.candidate.size for move in moves)
            usage[tier] = _after(usage[tier], freed)
    return planned


def _plan_rule(
    rule: RuleConfig,
    tier: str,
    now: datetime,
    journal: Journal,
    usage: Any,
    taken: set[tuple[str, str]],
) -> list[PlannedMove]:
    assert rule.to is not None
    selection = CandidateFilter(
        prefix=rule.filter.prefix,
        suffix=rule.filter.suffix,
        min_size=rule.filter.min_size if rule.min_size is None else rule.min_size,
        max_size=rule.filter.max_size,
    )
    cutoff = None if rule.after is None else now - rule.after
    candidates = (
        c
        for c in journal.candidates(
            tier, order=rule.order, now=now, cutoff=cutoff, selection=selection
        )
        if (tier, c.key) not in taken
    )
    if rule.when == "over-watermark":
        if not usage.capacity:
            return []
        chosen = choose_for_watermark(
            candidates,
            used=usage.used_bytes,
            capacity=usage.capacity,
            high=usage.high_watermark,
            low=usage.low_watermark,
        )
    else:
        chosen = list(candidates)
    return [PlannedMove(rule.id, tier, rule.to, c) for c in chosen]


def _after(usage: Any, freed: int) -> Any:
    from dataclasses import replace

    return replace(usage, used_bytes=usage.used_bytes - freed, bytes=usage.bytes - freed)


def enforce(
    shelf: Shelf,
    *,
    dry_run: bool,
    rule: str | None,
    at: datetime | None,
    progress: Progress | None,
    run_id: str | None = None,
) -> EnforceOutcome:
    now = evaluation_instant(at, dry_run=dry_run, what="would move")
    outcome = EnforceOutcome(now=now, dry_run=dry_run)
    if dry_run:
        outcome.planned = plan_migrations(shelf, now, rule)
        return outcome
    with RunLock(shelf.catalog, "shelflife enforce"):
        engine = migrator(shelf)
        outcome.recovered = run_sync(engine.recover(progress))
        outcome.planned = plan_migrations(shelf, now, rule)
        result = MigrateResult(run_id=run_id or f"enforce-{now:%Y%m%dT%H%M%S}")
        groups: dict[tuple[str, str, str], list[Candidate]] = {}
        for move in outcome.planned:
            groups.setdefault((move.rule, move.tier, move.to), []).append(move.candidate)
        for (rule_id, src, dst), items in groups.items():
            part = run_sync(engine.migrate(rule_id, src, dst, items, progress, result.run_id))
            result.moved += part.moved
            result.failed += part.failed
        outcome.result = result
    return outcome


def recover(shelf: Shelf, progress: Progress | None = None) -> dict[str, int]:
    with RunLock(shelf.catalog, "shelflife recover"):
        return run_sync(migrator(shelf).recover(progress))


def recall(shelf: Shelf, ref: str, to: str | None, progress: Progress | None = None) -> Location:
    """Bring an object to ``to`` (the default tier) the same way a migration moves it."""
    location = shelf.resolve(ref)
    target = to or shelf.config.default_tier
    if target not in shelf.config.tiers:
        raise UsageError(f"unknown tier {target!r}")
    if location.tier == target:
        return location
    row = shelf.catalog.get(location.tier, location.key)
    if row is None:
        info = run_sync(shelf.store(location.tier).head(location.key))
        size, modified, checksum = info.size, info.modified, None
    else:
        size, modified, checksum = row.size, row.modified_at, row.checksum
    candidate = Candidate(location.key, size, modified, None, checksum)
    with RunLock(shelf.catalog, f"shelflife recall {location.key[:200]}"):
        engine = migrator(shelf)
        run_sync(engine.recover(progress))
        result = run_sync(engine.migrate("recall", location.tier, target, [candidate], progress))
    if result.failed:
        from shelflife.errors import ShelflifeError

        raise ShelflifeError(f"recall of {location.key} failed: {result.failed[0][2]}")
    return Location(target, location.key)
