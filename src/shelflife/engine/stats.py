"""Usage per tier and overall health, computed from the inventory (never a full listing).

A tier with ``capacity = "disk"`` measures usage as the filesystem's used fraction:
anything else on that disk fills it too, and the point of the watermark is that the
disk never fills. Other tiers measure their inventory bytes against their capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shelflife.catalog import Catalog
from shelflife.catalog.ledger import ReferenceCounts
from shelflife.config.model import Config, HealthConfig
from shelflife.engine.context import Context
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.local import LocalStore

Status = Literal["healthy", "warning", "critical"]
_RANK = {"healthy": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class TierUsage:
    name: str
    objects: int
    bytes: int
    capacity: int | None
    used_bytes: int
    high_watermark: float
    low_watermark: float
    referenced_objects: int | None = None
    orphan_objects: int | None = None
    orphan_bytes: int | None = None
    quarantined_objects: int = 0
    quarantined_bytes: int = 0

    @property
    def usage_ratio(self) -> float | None:
        if not self.capacity:
            return None
        return self.used_bytes / self.capacity

    def as_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "capacity": self.capacity,
            "usage_ratio": None if self.usage_ratio is None else round(self.usage_ratio, 6),
            "used_bytes": self.used_bytes,
            "high_watermark": self.high_watermark,
            "low_watermark": self.low_watermark,
            "referenced_objects": self.referenced_objects,
            "orphan_objects": self.orphan_objects,
            "orphan_bytes": self.orphan_bytes,
            "quarantined_objects": self.quarantined_objects,
            "quarantined_bytes": self.quarantined_bytes,
        }


@dataclass(slots=True)
class Health:
    status: Status = "healthy"
    reasons: list[str] = field(default_factory=list)

    def raise_to(self, status: Status, reason: str) -> None:
        if _RANK[status] > _RANK[self.status]:
            self.status = status
        self.reasons.append(reason)


def tier_usage(
    config: Config,
    catalog: Catalog,
    stores: dict[str, ObstoreStore],
    references: dict[str, ReferenceCounts] | None = None,
    quarantined: dict[str, tuple[int, int]] | None = None,
) -> list[TierUsage]:
    """Usage of every tier from the inventory (and the filesystem for 'disk' capacity).

    ``references`` (from the latest reference snapshot) fills the referenced and orphan
    figures; without a snapshot they stay None: unknown, not zero. Quarantined objects
    still occupy their tier, so they count in ``objects`` and ``bytes`` and are also
    reported on their own.
    """
    quarantined = quarantined or {}
    totals = catalog.totals()
    usage = []
    for name, tier in config.tiers.items():
        objects, size = (totals[name].objects, totals[name].bytes) if name in totals else (0, 0)
        capacity: int | None
        used = size
        if tier.capacity == "disk":
            store = stores[name]
            assert isinstance(store, LocalStore)
            capacity, used = store.disk_size(), store.disk_used()
        else:
            capacity = tier.capacity
        counts = None if references is None else references.get(name, ReferenceCounts(0, 0, 0))
        usage.append(
            TierUsage(
                name,
                objects,
                size,
                capacity,
                used,
                tier.high_watermark,
                tier.low_watermark,
                None if counts is None else counts.referenced_objects,
                None if counts is None else counts.orphan_objects,
                None if counts is None else counts.orphan_bytes,
                *quarantined.get(name, (0, 0)),
            )
        )
    return usage


def classify(usage: list[TierUsage], thresholds: HealthConfig) -> Health:
    """Healthy, warning or critical, with a reason a person can read for each concern.

    A figure at or above a threshold reaches its status: usage of a tier (against its
    capacity), and the orphaned fraction of a tier's objects or of its bytes, whichever
    is worse. Tiers without a capacity, or without a reference snapshot yet, have no
    usage or orphan figure and raise nothing on that account."""
    health = Health()
    critical, warning = thresholds.usage_critical, thresholds.usage_warning
    for tier in usage:
        _classify_orphans(tier, thresholds, health)
        ratio = tier.usage_ratio
        if ratio is None:
            continue
        full = f"tier {tier.name} is {ratio:.0%} full"
        if ratio >= critical:
            health.raise_to("critical", f"{full} (critical at {critical:.0%})")
        elif ratio >= warning:
            health.raise_to("warning", f"{full} (warning at {warning:.0%})")
    return health


def _classify_orphans(tier: TierUsage, thresholds: HealthConfig, health: Health) -> None:
    if not tier.orphan_objects or not tier.objects:
        return
    by_count = tier.orphan_objects / tier.objects
    by_bytes = (tier.orphan_bytes or 0) / tier.bytes if tier.bytes else 0.0
    worst = max(by_count, by_bytes)
    what = (
        f"tier {tier.name}: {tier.orphan_objects} of {tier.objects} objects "
        f"({by_count:.0%}, {by_bytes:.0%} of bytes) are orphans"
    )
    if worst >= thresholds.orphan_critical:
        health.raise_to("critical", f"{what} (critical at {thresholds.orphan_critical:.0%})")
    elif worst >= thresholds.orphan_warning:
        health.raise_to("warning", f"{what} (warning at {thresholds.orphan_warning:.0%})")


def stats_json(usage: list[TierUsage], health: Health) -> dict[str, Any]:
    """The ``stats --json`` shape of DESIGN 5.2."""
    return {
        "tiers": {tier.name: tier.as_json() for tier in usage},
        "health": {"status": health.status, "reasons": health.reasons},
    }


def usage(context: Context, *, references: bool = True) -> list[TierUsage]:
    """Usage of every tier of ``context`` (see :func:`tier_usage`); the referenced and
    orphan figures only with ``references`` (they cost a pass over the inventory)."""
    config = context.config
    stores = {name: context.store(name) for name, t in config.tiers.items() if t.capacity == "disk"}
    snapshot = context.ledger.latest_snapshot() if references else None
    counts = None if snapshot is None else context.ledger.reference_counts(snapshot["id"])
    quarantined = context.ledger.quarantined_totals()
    return tier_usage(config, context.catalog, stores, counts, quarantined)
