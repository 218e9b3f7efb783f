"""The planner: the actions the rules call for at an instant ``now``.

Pure: it reads the inventory and references it is handed (an :class:`Inventory`) and
does no I/O of its own, so the same rules over the same inventory at the same ``now``
always give the same plan. The service hands it the catalog; tests hand it lists.

Semantics, in the order they are applied:

- Rules apply in file order. An object a rule *selected* (acted on or skipped) on a tier
  is taken: no later rule acts on it in the same plan.
- ``migrate`` with ``when = "over-watermark"``: nothing while the tier's usage is at or
  below its high mark; otherwise the coldest objects (by the rule's ``order``, ties by
  key) until the estimate is at or below the low mark. With ``after``: every object
  modified longer ago than ``after``.
- ``expire``: objects modified longer ago than ``after``. An object a row points at
  through a reference with ``on_expire = "block"`` is kept and listed as skipped; the
  others carry, per source, what happens to their rows (``null`` or ``delete-row``).
- ``collect-orphans``: objects no reference names, modified longer ago than ``grace``.
  When they exceed ``max_fraction`` of the tier's objects, the rule is refused for that
  tier and plans nothing there.
- Pinned objects and objects under an upload lease are never acted on: listed as skipped.
- Whatever a rule plans to remove from a tier counts as freed for the rules after it
  (quarantine does not: the trash copy stays on the tier until it is purged).

Actions and skips go into the :class:`~shelflife.model.plan.Plan` as they are made (its
item store: the catalog, or memory); the planner itself keeps no list of them. Which
objects earlier rules took is remembered by the inventory when it can
(``excludes_planned``: the catalog's view excludes the plan's items in its query), by the
planner otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from shelflife.config.model import ReferenceConfig, RuleConfig
from shelflife.model.actions import Action, ActionKind, Refusal, Skip
from shelflife.model.plan import Plan
from shelflife.model.selection import (
    ObjectView,
    Selection,
    TierState,
    aged_from,
    rule_tiers,
    selection,
    selects,
)


class Inventory(Protocol):
    # True when objects() leaves out what the plan being built already holds
    excludes_planned: bool

    def tier(self, name: str) -> TierState: ...

    def objects(self, tier: str, order: str, selection: Selection) -> Iterable[ObjectView]:
        """The tier's live objects in ``order`` (``oldest``, ``least-recently-used``,
        ``largest``), ties broken by key in byte order."""
        ...


def plan(
    rules: Sequence[RuleConfig],
    inventory: Inventory,
    now: datetime,
    *,
    tiers: Sequence[str],
    references: Sequence[ReferenceConfig] = (),
    blocks: Mapping[tuple[str, str], str] | None = None,
    into: Plan | None = None,
) -> Plan:
    """The plan for ``rules`` (already chosen: enabled, ``--rule``, one action kind),
    built into ``into`` (a plan whose items live in the catalog) or a new in-memory plan.

    ``blocks`` maps (rule action, tier) to why rules of that action may not act on that
    tier this time (references that cannot be trusted): such a rule is refused there."""
    result = into if into is not None else Plan(now=now)
    result.now = now
    result.rules = [rule.id for rule in rules]
    state = {tier: inventory.tier(tier) for tier in tiers}
    remember = not getattr(inventory, "excludes_planned", False)
    taken: set[tuple[str, str]] = set()
    blocks = blocks or {}
    for position, rule in enumerate(rules):
        for tier in rule_tiers(rule, tiers):
            blocked = blocks.get((rule.action, tier))
            if blocked is not None:
                result.refusals.append(Refusal(rule.id, tier, f"rule {rule.id!r}: {blocked}"))
                continue
            later = any(tier in rule_tiers(other, tiers) for other in rules[position + 1 :])
            result.items.flush()  # what earlier rules took is visible to the inventory
            planner = _RulePlanner(rule, tier, now, state[tier], references, result)
            planner.run(inventory, taken if remember else None, later)
            state[tier] = replace(state[tier], used=state[tier].used - planner.freed)
            if state[tier].versioned and planner.deletes:
                note = (
                    f"tier {tier} keeps versions: a delete adds a delete marker and the bytes "
                    "stay as noncurrent versions until the bucket's lifecycle expires them "
                    f"(see 'shelflife policy export --tier {tier}')"
                )
                if note not in result.notes:
                    result.notes.append(note)
    result.items.flush()
    return result


class _RulePlanner:
    """One rule on one tier, adding to the plan as it goes."""

    def __init__(
        self,
        rule: RuleConfig,
        tier: str,
        now: datetime,
        state: TierState,
        references: Sequence[ReferenceConfig],
        plan: Plan,
    ) -> None:
        self.rule = rule
        self.tier = tier
        self.now = now
        self.state = state
        self.references = references
        self.plan = plan
        self.kind = ActionKind.of_rule(rule.action, rule.mode)
        self.counts: dict[str, dict[str, int]] = {}
        self.freed = 0  # bytes this rule's actions remove from the tier
        self.deletes = False

    @property
    def planned(self) -> int:
        return sum(figures["objects"] for figures in self.counts.values())

    def run(self, inventory: Inventory, taken: set[tuple[str, str]] | None, later: bool) -> None:
        rule = self.rule
        watermark = rule.action == "migrate" and rule.when == "over-watermark"
        used, target = self.state.used, 0
        took_actions: list[str] = []
        took_skips: list[str] = []
        if watermark:
            capacity = self.state.capacity
            if not capacity or used <= self.state.high * capacity:
                return
            target = int(self.state.low * capacity)
        for obj in inventory.objects(self.tier, rule.order, selection(rule, self.now)):
            if watermark and used <= target:
                break
            if taken is not None and (self.tier, obj.key) in taken:
                continue
            if not selects(rule, obj, self.now):
                continue
            if rule.action == "collect-orphans" and obj.refs:
                continue
            acted = self._select(obj)
            if acted:
                used -= obj.size
            if taken is not None and later:
                # remember what this rule took only if a later rule could take it too
                (took_actions if acted else took_skips).append(obj.key)
        if rule.action == "collect-orphans" and self._refused():
            took_actions = []
        if taken is not None:
            taken.update((self.tier, key) for key in [*took_actions, *took_skips])

    def _select(self, obj: ObjectView) -> bool:
        """Plan an action on ``obj`` (True) or list it as skipped (False)."""
        reason = None
        if obj.pinned:
            reason = "pinned"
        elif obj.leased:
            reason = "under an upload lease"
        rows: dict[str, str] | None = None
        if reason is None and self.rule.action == "expire":
            rows = {}
            for index in sorted(obj.refs):
                known = 0 <= index < len(self.references)
                behaviour = self.references[index].on_expire if known else "block"
                label = self.references[index].label if known else "an undeclared reference"
                if behaviour == "block":
                    reason = f"referenced by {label} (on_expire = block)"
                    break
                rows[label] = behaviour
        if reason is not None:
            self.plan.skip(Skip(self.rule.id, self.tier, obj.key, reason))
            return False
        action = Action(
            self.kind,
            self.rule.id,
            self.tier,
            obj.key,
            obj.size,
            to=self.rule.to if self.kind == ActionKind.MIGRATE else None,
            etag=obj.etag,
            modified=obj.modified,
            rows=rows or None,
            age=self.rule.age_basis,
            aged_from=aged_from(self.rule.age_basis, obj),
        )
        self.plan.add(action, arrived=obj.arrived or obj.modified)
        entry = self.counts.setdefault(action.action, {"objects": 0, "bytes": 0})
        entry["objects"] += 1
        entry["bytes"] += obj.size
        if self.kind != ActionKind.QUARANTINE:  # the trash copy stays on the tier until purged
            self.freed += obj.size
        self.deletes = self.deletes or self.kind.deletes
        return True

    def _refused(self) -> bool:
        """Refuse the rule on this tier (it plans nothing there) when it would collect
        more than its ``max_fraction`` of the tier's objects."""
        held = self.state.objects
        count = self.planned
        if not held or count / held <= self.rule.max_fraction:
            return False
        self.plan.refusals.append(
            Refusal(
                self.rule.id,
                self.tier,
                f"rule {self.rule.id!r} would collect {count} of {held} objects on tier "
                f"{self.tier} ({count / held:.0%}), above its max_fraction of "
                f"{self.rule.max_fraction:.0%}",
            )
        )
        self.plan.discard(self.rule.id, self.tier, self.counts)
        self.freed = 0
        self.deletes = False
        return True


__all__ = ["Inventory", "ObjectView", "Plan", "Selection", "TierState", "plan"]
