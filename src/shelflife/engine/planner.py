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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from shelflife.catalog.ledger import TRASH_PREFIX
from shelflife.catalog.view import ObjectView, Selection, TierState
from shelflife.config.model import ReferenceConfig, RuleConfig
from shelflife.model.actions import DELETING, Action, Refusal, Skip, totals


class Inventory(Protocol):
    def tier(self, name: str) -> TierState: ...

    def objects(self, tier: str, order: str, selection: Selection) -> Iterable[ObjectView]:
        """The tier's live objects in ``order`` (``oldest``, ``least-recently-used``,
        ``largest``), ties broken by key in byte order."""
        ...


@dataclass
class Plan:
    """The actions the rules call for at ``now``: pure data, serializable, reviewable."""

    now: datetime
    id: str = ""
    rules: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, dict[str, int]]:
        return totals(self.actions)

    def deletions(self) -> tuple[int, int]:
        """How many objects, and bytes, the plan removes for good (or into quarantine)."""
        chosen = [a for a in self.actions if a.action in DELETING]
        return len(chosen), sum(a.bytes for a in chosen)

    def as_json(self) -> dict[str, Any]:
        """The DESIGN 5.2 plan shape (plus ``plan_id``, ``refusals`` and ``notes``)."""
        return {
            "plan_id": self.id,
            "now": self.now.isoformat(),
            "rules": self.rules,
            "actions": [a.as_json() for a in self.actions],
            "skipped": [s.as_json() for s in self.skipped],
            "refusals": [r.as_json() for r in self.refusals],
            "totals": self.totals(),
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Plan:
        return cls(
            now=datetime.fromisoformat(body["now"]),
            id=str(body.get("plan_id") or ""),
            rules=list(body.get("rules", [])),
            actions=[Action.from_json(item) for item in body["actions"]],
            skipped=[Skip(**item) for item in body.get("skipped", [])],
            refusals=[Refusal(**item) for item in body.get("refusals", [])],
            notes=list(body.get("notes", [])),
        )


def matches(rule: RuleConfig, obj: ObjectView) -> bool:
    """Whether ``obj`` passes the rule's filter (prefix, suffix, tags, sizes)."""
    selection = rule.filter
    if selection.prefix and not obj.key.startswith(selection.prefix):
        return False
    if selection.suffix and not obj.key.endswith(selection.suffix):
        return False
    min_size = selection.min_size if rule.min_size is None else rule.min_size
    if min_size is not None and obj.size < min_size:
        return False
    if selection.max_size is not None and obj.size > selection.max_size:
        return False
    if selection.tags:
        tags = obj.tags or {}
        if any(tags.get(name) != value for name, value in selection.tags.items()):
            return False
    return not obj.key.startswith(TRASH_PREFIX + "/")


def rule_tiers(rule: RuleConfig, tiers: Sequence[str]) -> list[str]:
    if rule.tier != "*":
        return [rule.tier]
    return [tier for tier in tiers if tier != rule.to]


def plan(
    rules: Sequence[RuleConfig],
    inventory: Inventory,
    now: datetime,
    *,
    tiers: Sequence[str],
    references: Sequence[ReferenceConfig] = (),
    blocks: Mapping[tuple[str, str], str] | None = None,
) -> Plan:
    """The plan for ``rules`` (already chosen: enabled, ``--rule``, one action kind).

    ``blocks`` maps (rule action, tier) to why rules of that action may not act on that
    tier this time (references that cannot be trusted): such a rule is refused there."""
    result = Plan(now=now, rules=[rule.id for rule in rules])
    labels = [r.label for r in references]
    state = {tier: inventory.tier(tier) for tier in tiers}
    taken: set[tuple[str, str]] = set()
    blocks = blocks or {}
    for position, rule in enumerate(rules):
        for tier in rule_tiers(rule, tiers):
            blocked = blocks.get((rule.action, tier))
            if blocked is not None:
                result.refusals.append(Refusal(rule.id, tier, f"rule {rule.id!r}: {blocked}"))
                continue
            later = any(tier in rule_tiers(other, tiers) for other in rules[position + 1 :])
            planner = _RulePlanner(rule, tier, now, state[tier], references, labels)
            planner.run(inventory, taken)
            result.actions += planner.actions
            result.skipped += planner.skipped
            result.refusals += planner.refusals
            if later:  # remember what this rule took only if a later rule could take it too
                taken.update((tier, a.key) for a in planner.actions)
                taken.update((tier, s.key) for s in planner.skipped)
            # quarantine keeps the bytes on the tier (under the trash prefix) until purged
            freed = sum(a.bytes for a in planner.actions if a.action != "quarantine")
            state[tier] = replace(
                state[tier], used=state[tier].used - freed, objects=state[tier].objects
            )
            if state[tier].versioned and any(a.action in DELETING for a in planner.actions):
                note = (
                    f"tier {tier} keeps versions: a delete adds a delete marker and the bytes "
                    "stay as noncurrent versions until the bucket's lifecycle expires them "
                    f"(see 'shelflife policy export --tier {tier}')"
                )
                if note not in result.notes:
                    result.notes.append(note)
    return result


class _RulePlanner:
    """One rule on one tier."""

    def __init__(
        self,
        rule: RuleConfig,
        tier: str,
        now: datetime,
        state: TierState,
        references: Sequence[ReferenceConfig],
        labels: list[str],
    ) -> None:
        self.rule = rule
        self.tier = tier
        self.now = now
        self.state = state
        self.references = references
        self.labels = labels
        self.actions: list[Action] = []
        self.skipped: list[Skip] = []
        self.refusals: list[Refusal] = []

    def run(self, inventory: Inventory, taken: set[tuple[str, str]]) -> None:
        rule = self.rule
        cutoff: datetime | None = None
        if rule.action == "collect-orphans":
            cutoff = self.now - rule.grace
        elif rule.after is not None:
            cutoff = self.now - rule.after
        selection = Selection(
            prefix=rule.filter.prefix,
            suffix=rule.filter.suffix,
            min_size=rule.filter.min_size if rule.min_size is None else rule.min_size,
            max_size=rule.filter.max_size,
            modified_before=cutoff,
            unreferenced=rule.action == "collect-orphans",
        )
        watermark = rule.action == "migrate" and rule.when == "over-watermark"
        used, target = self.state.used, 0
        if watermark:
            capacity = self.state.capacity
            if not capacity or used <= self.state.high * capacity:
                return
            target = int(self.state.low * capacity)
        for obj in inventory.objects(self.tier, rule.order, selection):
            if watermark and used <= target:
                break
            if (self.tier, obj.key) in taken or not matches(rule, obj):
                continue
            if cutoff is not None and not obj.modified < cutoff:
                continue
            if rule.action == "collect-orphans" and obj.refs:
                continue
            if self._select(obj):
                used -= obj.size
        if rule.action == "collect-orphans":
            self._check_fraction()

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
                label = self.labels[index] if known else "an undeclared reference"
                if behaviour == "block":
                    reason = f"referenced by {label} (on_expire = block)"
                    break
                rows[label] = behaviour
        if reason is not None:
            self.skipped.append(Skip(self.rule.id, self.tier, obj.key, reason))
            return False
        if self.rule.action == "migrate":
            name = "migrate"
        elif self.rule.action == "expire":
            name = "expire"
        else:
            name = "quarantine" if self.rule.mode == "quarantine" else "delete-orphan"
        self.actions.append(
            Action(
                name,
                self.rule.id,
                self.tier,
                obj.key,
                obj.size,
                to=self.rule.to if name == "migrate" else None,
                etag=obj.etag,
                modified=obj.modified,
                rows=rows or None,
            )
        )
        return True

    def _check_fraction(self) -> None:
        held = self.state.objects
        count = len(self.actions)
        if not held or count / held <= self.rule.max_fraction:
            return
        self.refusals.append(
            Refusal(
                self.rule.id,
                self.tier,
                f"rule {self.rule.id!r} would collect {count} of {held} objects on tier "
                f"{self.tier} ({count / held:.0%}), above its max_fraction of "
                f"{self.rule.max_fraction:.0%}",
            )
        )
        self.actions = []


__all__ = ["Inventory", "ObjectView", "Plan", "Selection", "TierState", "matches", "plan"]
