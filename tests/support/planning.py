"""Inventories for the planner, in memory: no catalog, no stores."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shelflife.model.selection import ObjectView, Selection, TierState


@dataclass
class ListInventory:
    """Objects per tier in lists; ignores the selection (the planner must not rely on it)."""

    objects_by_tier: dict[str, list[ObjectView]]
    states: dict[str, TierState] = field(default_factory=dict)

    def tier(self, name: str) -> TierState:
        held = self.objects_by_tier.get(name, [])
        return self.states.get(
            name, TierState(name, used=sum(o.size for o in held), objects=len(held))
        )

    def objects(self, tier: str, order: str, selection: Selection) -> Iterable[ObjectView]:
        items = self.objects_by_tier.get(tier, [])

        def sort_key(obj: ObjectView) -> tuple[Any, bytes]:
            if order == "largest":
                return (-obj.size, obj.key.encode())
            if order == "least-recently-used":
                return (obj.accessed or obj.modified, obj.key.encode())
            return (obj.modified, obj.key.encode())

        return sorted(items, key=sort_key)
