"""Making a plan over the catalog: the references read and judged, then the planner.

Before rules that remove objects from a tier (every deleting rule, and migrations when
references are declared: their rewrite must find every row), a fresh reference snapshot
is taken and judged (:mod:`shelflife.engine.trust`): an untrusted tier refuses the rule
there. The plan's items are written to the catalog as they are planned.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from shelflife.base.progress import Progress
from shelflife.catalog.history import History
from shelflife.catalog.plans import PlanStore, count, prune
from shelflife.catalog.view import CatalogInventory
from shelflife.config.model import Config, RuleConfig
from shelflife.engine import planner, trust
from shelflife.engine.context import Context
from shelflife.engine.stats import usage
from shelflife.errors import UsageError
from shelflife.model.actions import Refusal
from shelflife.model.cost import PlanCost, TierPrices, tier_prices
from shelflife.model.plan import Plan
from shelflife.model.selection import TierState, rule_tiers
from shelflife.references.ordered import SortedReferences
from shelflife.references.sources import ParseReport


def new_id(prefix: str, now: datetime) -> str:
    return f"{prefix}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def tier_states(context: Context, rules: Sequence[RuleConfig]) -> dict[str, TierState]:
    """Each tier's usage as planning starts. Whether a bucket keeps versions is asked only
    of the tiers the rules act on (the only ones a plan deletes from): the question costs
    an S3 client and a request."""
    tiers = list(context.config.tiers)
    acted_on = {tier for rule in rules for tier in rule_tiers(rule, tiers)}
    states = {}
    for tier in usage(context, references=False):
        states[tier.name] = TierState(
            name=tier.name,
            used=tier.used_bytes,
            capacity=tier.capacity,
            high=tier.high_watermark,
            low=tier.low_watermark,
            objects=context.ledger.objects_in_tier(tier.name),
            versioned=tier.name in acted_on and context.versioned(tier.name),
        )
    return states


def plan_prices(config: Config) -> dict[str, TierPrices]:
    """Each tier's prices, for the cost of a plan; PUTs counted as a migration sends."""
    from shelflife.engine.migrate import single_put_limit

    executor = config.executor
    return {
        name: tier_prices(
            tier,
            single_put_limit(
                executor.transfer_memory,
                executor.concurrency,
                executor.batch_size,
                tier.multipart_threshold,
            ),
        )
        for name, tier in config.tiers.items()
    }


def unrewritten(config: Config, rules: Sequence[RuleConfig]) -> list[str]:
    """A warning for each tier a migrate rule moves objects off while no reference source
    is declared: no row is rewritten, so rows naming those objects will name a location
    where they no longer are."""
    if config.references:
        return []
    tiers = list(config.tiers)
    moved_off = dict.fromkeys(
        tier for rule in rules if rule.action == "migrate" for tier in rule_tiers(rule, tiers)
    )
    return [
        f"tier {tier}: no reference source declared — rows that point at these objects "
        "will not be rewritten when they move (shelflife url/get of a stored value still "
        "find the object; declare the columns under [[references]] to have rows follow)"
        for tier in moved_off
    ]


def make_plan(
    context: Context,
    now: datetime,
    rules: list[RuleConfig],
    progress: Progress | None = None,
    warnings: list[str] | None = None,
) -> Plan:
    """Plan ``rules`` at ``now`` over the catalog (saved there, items streamed in).

    Refuses (exit 3, :class:`~shelflife.errors.RefusedError`) when references that a
    deleting rule needs cannot be read; a rule on a tier whose references cannot be
    trusted is refused in the plan."""
    config = context.config
    all_tiers = list(config.tiers)
    snapshot_id = None
    naming: SortedReferences | None = None
    blocks: trust.Blocks = {}
    unmatched = None
    report: ParseReport | None = None
    deleting = [r for r in rules if r.action in ("expire", "collect-orphans")]
    if deleting or (rules and config.references):
        sources = context.sources()
        tiers = sorted({t for r in deleting for t in rule_tiers(r, all_tiers)})
        if deleting:
            collecting = any(r.action == "collect-orphans" for r in deleting)
            trust.check_sources(context, sources, tiers, need_sources=collecting)
        naming, snapshot_id, report = trust.read_references(context, sources, progress)
    try:
        if report is not None:
            collect_tiers = sorted(
                {
                    t
                    for r in rules
                    if r.action == "collect-orphans"
                    for t in rule_tiers(r, all_tiers)
                }
            )
            blocks = trust.blocks(context, report, collect_tiers)
            unmatched = {"count": report.unmatched, "examples": report.examples[:5]}
            context.ledger.purge_expired_leases(context.clock())  # never --at's instant
        plan_id = new_id("plan", context.clock())
        history = History(context.catalog.engine)
        history.begin_plan(plan_id, created_at=context.clock(), evaluated_at=now)
        marking = None if unmatched is None else ("snapshot" if naming is None else "merge")
        result = Plan(
            now=now,
            id=plan_id,
            items=PlanStore(context.catalog.engine, plan_id),
            warnings=[*(warnings or []), *unrewritten(config, rules)],
            unmatched=unmatched,
            marking=marking,
            cost=PlanCost(plan_prices(config), now),
        )
        inventory = CatalogInventory(
            context.catalog.engine,
            tier_states(context, rules),
            snapshot_id=snapshot_id,
            now=now,
            plan_id=plan_id,
            naming=naming,
        )
        planner.plan(
            rules,
            inventory,
            now,
            tiers=all_tiers,
            references=config.references,
            blocks=blocks,
            into=result,
        )
    finally:
        if naming is not None:
            naming.close()
    header = {name: value for name, value in result.header_json().items() if name != "totals"}
    size = sum(figures["bytes"] for figures in result.counts.values())
    history.finish_plan(plan_id, actions=result.size, size=size, header=header)
    prune(context.catalog.engine)
    return result


def stored_plan(context: Context, plan_id: str) -> Plan | None:
    """A plan saved in the catalog, its items read from there as needed; a usage error if
    its items were pruned (or it predates plans kept item by item)."""
    record = History(context.catalog.engine).plan_record(plan_id)
    if record is None:
        return None
    evaluated, status, expected, header = record
    engine = context.catalog.engine
    if status == "open" and count(engine, plan_id) != expected:
        raise UsageError(
            f"plan {plan_id} is no longer kept in full in the catalog (the newest 20 plans "
            "are); applying part of it is not what was reviewed",
            hint="make a fresh plan ('shelflife plan', or the command with --dry-run)",
        )
    result = Plan(
        now=evaluated,
        id=plan_id,
        items=PlanStore(engine, plan_id),
        rules=list(header.get("rules", [])),
        refusals=[Refusal(**item) for item in header.get("refusals", [])],
        notes=list(header.get("notes", [])),
        warnings=list(header.get("warnings", [])),
        unmatched=header.get("unmatched_references"),
        marking=header.get("marking"),
        cost=PlanCost.from_json(header["cost"], evaluated) if "cost" in header else None,
    )
    for action in result.iter_actions():  # totals, a batch at a time
        result.count(action)
    return result
