"""A plan: the actions the rules call for at an instant, and what they select but keep.

A plan's actions and skips are kept by a :class:`PlanItems` store: the catalog for every
plan the service makes (written as they are planned, read back in batches to execute,
show and export, so that no process holds every action), or memory for plans built in
tests and plans read from a file. Totals are counted as actions are added.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shelflife.model.actions import DELETING, Action, Refusal, Skip
from shelflife.model.cost import PlanCost


class PlanItems(Protocol):
    """Where a plan's actions and skips are kept, in the order they were added."""

    def add_action(self, action: Action) -> None: ...

    def add_skip(self, skip: Skip) -> None: ...

    def discard(self, rule: str, tier: str) -> None:
        """Forget the actions added for ``rule`` on ``tier`` (a refused rule plans nothing)."""
        ...

    def flush(self) -> None:
        """Make everything added so far visible to readers (and to the inventory)."""
        ...

    def actions(self, kinds: Collection[str] | None = None) -> Iterator[Action]:
        """The actions (of ``kinds``, default all) in plan order."""
        ...

    def skipped(self) -> Iterator[Skip]: ...


class MemoryItems:
    """A plan's items in lists: for plans built in tests and plans read from a file."""

    def __init__(self, actions: list[Action] | None = None, skipped: list[Skip] | None = None):
        self._actions = actions or []
        self._skipped = skipped or []

    def add_action(self, action: Action) -> None:
        self._actions.append(action)

    def add_skip(self, skip: Skip) -> None:
        self._skipped.append(skip)

    def discard(self, rule: str, tier: str) -> None:
        self._actions = [a for a in self._actions if (a.rule, a.tier) != (rule, tier)]

    def flush(self) -> None:
        return None

    def actions(self, kinds: Collection[str] | None = None) -> Iterator[Action]:
        return iter([a for a in self._actions if kinds is None or a.action in kinds])

    def skipped(self) -> Iterator[Skip]:
        return iter(list(self._skipped))


@dataclass
class Plan:
    """The actions the rules call for at ``now``: reviewable, serializable, applied once."""

    now: datetime
    id: str = ""
    rules: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmatched: dict[str, Any] | None = None  # reference values no tier's spelling matches
    # How the references were compared with the inventory: "merge" (read in byte order)
    # or "snapshot" (copied into the catalog); None when no rule needed them.
    marking: str | None = None
    items: PlanItems = field(default_factory=MemoryItems, repr=False)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skip_count: int = 0
    # [objects, bytes] per (rule, action, tier, destination), for summaries
    groups: dict[tuple[str, str, str, str | None], list[int]] = field(default_factory=dict)
    # What the actions cost, counted as they are added (None: no prices were given)
    cost: PlanCost | None = None

    # -- building ---------------------------------------------------------------------------

    def add(self, action: Action, arrived: datetime | None = None) -> None:
        """Add an action; ``arrived``: when the object entered its tier (for the cost)."""
        self.items.add_action(action)
        self.count(action)
        if self.cost is not None:
            self.cost.add(action, arrived)

    def count(self, action: Action) -> None:
        """Count an action into the totals (an item the store holds already)."""
        entry = self.counts.setdefault(action.action, {"objects": 0, "bytes": 0})
        entry["objects"] += 1
        entry["bytes"] += action.bytes
        group = self.groups.setdefault((action.rule, action.action, action.tier, action.to), [0, 0])
        group[0] += 1
        group[1] += action.bytes

    def skip(self, skip: Skip) -> None:
        self.items.add_skip(skip)
        self.skip_count += 1

    def discard(self, rule: str, tier: str, counts: dict[str, dict[str, int]]) -> None:
        """Drop what ``rule`` planned on ``tier`` (``counts``: its totals, to subtract)."""
        self.items.discard(rule, tier)
        if self.cost is not None:
            self.cost.discard(rule, tier)
        for group in [g for g in self.groups if g[0] == rule and g[2] == tier]:
            del self.groups[group]
        for name, figures in counts.items():
            entry = self.counts[name]
            entry["objects"] -= figures["objects"]
            entry["bytes"] -= figures["bytes"]
            if not entry["objects"]:
                del self.counts[name]

    # -- reading ----------------------------------------------------------------------------

    def iter_actions(self, kinds: Collection[str] | None = None) -> Iterator[Action]:
        self.items.flush()
        return self.items.actions(kinds)

    def iter_skipped(self) -> Iterator[Skip]:
        self.items.flush()
        return self.items.skipped()

    @property
    def actions(self) -> list[Action]:
        """Every action, in memory: for small plans and tests (see :meth:`iter_actions`)."""
        return list(self.iter_actions())

    @property
    def skipped(self) -> list[Skip]:
        return list(self.iter_skipped())

    @property
    def size(self) -> int:
        """How many actions."""
        return sum(figures["objects"] for figures in self.counts.values())

    def totals(self) -> dict[str, dict[str, int]]:
        return {name: dict(figures) for name, figures in self.counts.items()}

    def deletions(self) -> tuple[int, int]:
        """How many objects, and bytes, the plan removes for good (or into quarantine)."""
        chosen = [figures for name, figures in self.counts.items() if name in DELETING]
        return sum(f["objects"] for f in chosen), sum(f["bytes"] for f in chosen)

    def header_json(self) -> dict[str, Any]:
        """The plan shape without ``actions`` and ``skipped`` (streamed by the caller)."""
        body: dict[str, Any] = {
            "plan_id": self.id,
            "now": self.now.isoformat(),
            "rules": self.rules,
            "refusals": [r.as_json() for r in self.refusals],
            "totals": self.totals(),
            "notes": self.notes,
            "warnings": self.warnings,
        }
        if self.unmatched is not None:
            body["unmatched_references"] = self.unmatched
        if self.marking is not None:
            body["marking"] = self.marking
        if self.cost is not None:
            body["cost"] = self.cost.as_json()
        return body

    def as_json(self) -> dict[str, Any]:
        """The DESIGN 5.2 plan shape (plus ``plan_id``, ``refusals``, ``notes`` …)."""
        return {
            **self.header_json(),
            "actions": [a.as_json() for a in self.iter_actions()],
            "skipped": [s.as_json() for s in self.iter_skipped()],
        }

    def json_chunks(self) -> Iterator[str]:
        """The plan shape as JSON text, one action or skip at a time (bounded memory)."""
        yield "{"
        for name, value in self.header_json().items():
            yield f"\n {json.dumps(name)}: {json.dumps(value, default=str)},"
        lists = {
            "actions": (a.as_json() for a in self.iter_actions()),
            "skipped": (s.as_json() for s in self.iter_skipped()),
        }
        for position, (name, items) in enumerate(lists.items()):
            yield f"\n {json.dumps(name)}: ["
            for index, item in enumerate(items):
                yield ("," if index else "") + "\n  " + json.dumps(item, default=str)
            yield "\n ]" + ("," if position == 0 else "")
        yield "\n}\n"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Plan:
        result = cls(
            now=datetime.fromisoformat(body["now"]),
            id=str(body.get("plan_id") or ""),
            rules=list(body.get("rules", [])),
            refusals=[Refusal(**item) for item in body.get("refusals", [])],
            notes=list(body.get("notes", [])),
            warnings=list(body.get("warnings", [])),
            marking=body.get("marking"),
        )
        for item in body["actions"]:
            result.add(Action.from_json(item))
        for item in body.get("skipped", []):
            result.skip(Skip(**item))
        if isinstance(body.get("cost"), dict):
            result.cost = PlanCost.from_json(body["cost"], result.now)
        return result
