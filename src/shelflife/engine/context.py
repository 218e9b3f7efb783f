"""What the engine works with: one configuration's catalog, stores, reference sources and
clock. The service composes it (:class:`shelflife.service.shelf.Shelf` holds one); the
engine and the services take it, never the facade."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from shelflife.base.ratelimit import RateLimiter
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.ledger import Ledger
from shelflife.catalog.lock import RunLock
from shelflife.catalog.ratelimits import CatalogSlots
from shelflife.config.model import Config, TierConfig
from shelflife.errors import UsageError
from shelflife.model.locations import Locator
from shelflife.references.sources import Databases, ReferenceSource, open_sources
from shelflife.stores import ObstoreStore, open_store


def _never_versioned(_tier: str) -> bool:
    return False


@dataclass
class Context:
    """A configuration opened for the engine."""

    config: Config
    catalog: Catalog
    ledger: Ledger
    locator: Locator
    databases: Databases
    versioned: Callable[[str], bool] = _never_versioned  # whether a tier's bucket keeps versions
    clock: Callable[[], datetime] = utcnow
    _stores: dict[str, ObstoreStore] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, config: Config, catalog: Catalog | None = None) -> Context:
        catalog = catalog or Catalog.open(config.catalog.url)
        return cls(config, catalog, Ledger(catalog.engine), Locator(config), Databases(config))

    def store(self, tier: str) -> ObstoreStore:
        """The store of a tier, opened on first use."""
        if tier not in self.config.tiers:
            raise UsageError(
                f"unknown tier {tier!r}", hint=f"known tiers: {', '.join(self.config.tiers)}"
            )
        if tier not in self._stores:
            store = open_store(self.config.tiers[tier], name=tier)
            store.limiter = tier_limiter(self, tier)
            self._stores[tier] = store
        return self._stores[tier]

    def sources(self) -> list[ReferenceSource]:
        """The declared reference sources, opened."""
        return open_sources(self.config, self.databases, self.locator)

    def run_lock(
        self, command: str, *, run_id: str | None = None, fanned_out: bool = False
    ) -> RunLock:
        """The catalog's run lease for ``command`` (``[executor] lease`` its period)."""
        period = self.config.executor.lease.total_seconds()
        return RunLock(self.catalog, command, run_id=run_id, period=period, fanned_out=fanned_out)

    def close(self) -> None:
        self.databases.dispose()
        self.catalog.close()


# One limiter per tier per process (and catalog): every store of the tier opened here —
# each Shelf's, each run's — takes its slots from it, and a throttle holds them all.
_LIMITERS: dict[tuple[str, str, float | None], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


# Stores that never answer "slow down": a tier of theirs without a limit shares nothing.
_NEVER_THROTTLE = ("file", "memory")


def tier_limiter(context: Context, name: str) -> RateLimiter:
    """The process's limiter of a tier, shared through the catalog: one with a rate its
    slots and holds, one without (a remote store) its holds only."""
    tier: TierConfig = context.config.tiers[name]
    rate = tier.max_requests_per_second
    key = (context.config.catalog.url, name, rate)
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            shared = rate is not None or tier.scheme not in _NEVER_THROTTLE
            slots = CatalogSlots(context.catalog.engine, name) if shared else None
            _LIMITERS[key] = RateLimiter(rate, slots=slots)
        return _LIMITERS[key]


def _forget_parents_limiters() -> None:
    global _LIMITERS_LOCK
    # a forked child starts its own: the parent's hold its catalog connections and slots
    _LIMITERS.clear()
    _LIMITERS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_limiters)
