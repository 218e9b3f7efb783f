"""What the dashboard's pages read: a run's itemized actions, the usage series per tier,
and the orphans of each tier, largest first.

Orphans are told exactly as ``gc --dry-run`` tells them: the references are read (by merge
in byte order, or copied into the catalog for its anti-join: :func:`trust.read_references`)
after the same refusals (:func:`trust.check_sources`), a tier whose references cannot be
trusted is listed as blocked with its reason, and the inventory yields the live objects no
reference names (:class:`CatalogInventory` with an ``unreferenced`` selection). A rule's
grace is not applied: like the stats' orphan figures, the list holds every orphan, young or
old, with its age; pinned and leased ones are flagged (a sweep leaves them)."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shelflife.catalog.history import History, RunItem, run_items, stats_series
from shelflife.catalog.view import CatalogInventory
from shelflife.engine import trust
from shelflife.engine.context import Context
from shelflife.errors import UsageError
from shelflife.model.selection import Selection
from shelflife.service import notify
from shelflife.service.records import stats_body

SERIES_STEP = timedelta(minutes=5)  # the dashboard stores its figures at most this often
ORPHANS_KEPT = 10_000  # the largest orphans a listing orders and pages through


@dataclass(frozen=True, slots=True)
class RunActions:
    """One page of the objects a run acted on (see :func:`run_items`)."""

    total: int
    offset: int
    limit: int
    items: list[RunItem]

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "actions": [item.as_json() for item in self.items],
        }


def run_actions(context: Context, run_id: str, *, limit: int, offset: int) -> RunActions:
    total, items = run_items(context.catalog.engine, run_id, limit=limit, offset=offset)
    return RunActions(total, offset, limit, items)


# -- usage over time ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsagePoint:
    taken_at: datetime
    used_bytes: int
    capacity: int | None
    objects: int

    @property
    def ratio(self) -> float | None:
        return None if not self.capacity else self.used_bytes / self.capacity


@dataclass(slots=True)
class TierSeries:
    """A tier's usage as the kept stats recorded it, oldest first, with its watermarks."""

    tier: str
    high_watermark: float
    low_watermark: float
    points: list[UsagePoint] = field(default_factory=list)


def usage_series(context: Context) -> dict[str, TierSeries]:
    """Per declared tier, its figures in every kept stats body (see :func:`stats_series`)."""
    series = {
        name: TierSeries(name, tier.high_watermark, tier.low_watermark)
        for name, tier in context.config.tiers.items()
    }
    for taken_at, body in stats_series(context.catalog.engine):
        for name, figures in body.get("tiers", {}).items():
            if name not in series:
                continue  # a tier no longer declared
            capacity = figures.get("capacity")
            used = figures.get("used_bytes")
            series[name].points.append(
                UsagePoint(
                    taken_at,
                    int(figures.get("bytes", 0) if used is None else used),
                    None if capacity is None else int(capacity),
                    int(figures.get("objects", 0)),
                )
            )
    return series


def dashboard_stats(context: Context, now: datetime) -> dict[str, Any]:
    """The figures as of now; stored (for /metrics and the usage series) when the last
    stored ones are older than :data:`SERIES_STEP`, so a dashboard left open, reloading
    itself every 30 s, does not fill the kept series with minutes of the same figures."""
    body = stats_body(context)
    history = History(context.catalog.engine)
    latest = history.latest_stats()
    if latest is None or now - latest[0] >= SERIES_STEP:
        history.save_stats(body, now)
        notify.stats_saved(context, None if latest is None else latest[1], body)
    return body


# -- orphans --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Orphan:
    tier: str
    key: str
    size: int
    modified: datetime
    pinned: bool
    leased: bool

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "key": self.key,
            "size": self.size,
            "modified_at": self.modified.isoformat(),
            "age_seconds": max(0, int((now - self.modified).total_seconds())),
            "pinned": self.pinned,
            "leased": self.leased,
        }


def offset_past_kept(offset: int, keep: int) -> UsageError:
    """The refusal of a page past the largest ``keep`` orphans, the most a listing holds."""
    return UsageError(
        f"offset {offset:,} is past the orphans listed: only the largest {keep:,} are kept "
        "in order (the rest are counted, not listed)",
        hint=f"ask for an offset below {keep:,}, list one tier at a time, or let a "
        "collect-orphans rule (gc) shorten the list",
    )


@dataclass(frozen=True, slots=True)
class OrphanList:
    """The orphans of one tier (or every tier), told once: the largest ``kept`` of them in
    order (largest first, ties by tier and key), the whole count and bytes per tier."""

    now: datetime
    marking: str  # merge | snapshot: how the references were compared with the inventory
    tiers: dict[str, tuple[int, int]]  # per tier listed: orphans and their bytes
    blocked: dict[str, str]  # tier → why its orphans cannot be told now
    total: int
    kept: int  # the most orphans ``ordered`` may hold
    ordered: list[Orphan]

    @property
    def truncated(self) -> bool:
        """Whether there are more orphans than the list holds (they are counted, not listed)."""
        return self.total > len(self.ordered)

    def page(self, *, limit: int, offset: int) -> Orphans:
        """``limit`` orphans from ``offset``; an offset past the list's capacity is refused."""
        if offset >= self.kept:
            raise offset_past_kept(offset, self.kept)
        return Orphans(
            self.now,
            self.marking,
            self.tiers,
            self.blocked,
            self.total,
            offset,
            limit,
            self.ordered[offset : offset + limit],
            listed=len(self.ordered),
            kept=self.kept,
        )


@dataclass(frozen=True, slots=True)
class Orphans:
    """One page of orphans, largest first (ties by tier and key), and the whole count.

    Only the largest ``kept`` orphans can be paged through; ``listed`` is how many of them
    there are (``total`` when ``truncated`` is false)."""

    now: datetime
    marking: str  # merge | snapshot: how the references were compared with the inventory
    tiers: dict[str, tuple[int, int]]  # per tier listed: orphans and their bytes
    blocked: dict[str, str]  # tier → why its orphans cannot be told now
    total: int
    offset: int
    limit: int
    items: list[Orphan]
    listed: int  # how many orphans the listing holds in order
    kept: int  # the most it may hold

    @property
    def truncated(self) -> bool:
        return self.total > self.listed

    def as_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "marking": self.marking,
            "tiers": {
                name: {"orphan_objects": count, "orphan_bytes": size}
                for name, (count, size) in self.tiers.items()
            },
            "blocked": self.blocked,
            "total": self.total,
            "listed": self.listed,
            "listed_limit": self.kept,
            "truncated": self.truncated,
            "offset": self.offset,
            "limit": self.limit,
            "orphans": [item.as_json(self.now) for item in self.items],
        }


def list_orphans(
    context: Context, now: datetime, *, tier: str | None, keep: int = ORPHANS_KEPT
) -> OrphanList:
    """The orphans of ``tier`` (every tier if None), the largest ``keep`` of them in order
    and every one counted. Refuses (:class:`~shelflife.errors.RefusedError`) as ``gc`` does
    when the references cannot be trusted; memory holds ``keep`` orphans at most, however
    many there are."""
    if tier is not None and tier not in context.config.tiers:
        raise UsageError(
            f"no tier {tier!r}", hint=f"declared tiers: {', '.join(context.config.tiers)}"
        )
    tiers = list(context.config.tiers) if tier is None else [tier]
    sources = context.sources()
    trust.check_sources(context, sources, tiers, need_sources=True)
    naming, snapshot_id, report = trust.read_references(context, sources)
    try:
        blocks = trust.blocks(context, report, tiers)
        blocked = {
            name: reason
            for (action, name), reason in blocks.items()
            if action == "collect-orphans" and name in tiers
        }
        inventory = CatalogInventory(
            context.catalog.engine, {}, snapshot_id=snapshot_id, now=now, naming=naming
        )
        wanted = Selection(unreferenced=True, named=True)
        counts: dict[str, tuple[int, int]] = {}

        def every_orphan() -> Iterator[Orphan]:
            for name in tiers:
                if name in blocked:
                    continue
                count = size = 0
                for view in inventory.objects(name, "largest", wanted):
                    if view.refs:
                        continue  # named: the inventory may yield what a source names
                    count, size = count + 1, size + view.size
                    yield Orphan(name, view.key, view.size, view.modified, view.pinned, view.leased)
                counts[name] = (count, size)

        # a heap of the largest ``keep``: the rest is counted and let go
        ordered = heapq.nsmallest(keep, every_orphan(), key=lambda o: (-o.size, o.tier, o.key))
    finally:
        if naming is not None:
            naming.close()
    return OrphanList(
        now,
        "merge" if naming is not None else "snapshot",
        counts,
        blocked,
        sum(count for count, _ in counts.values()),
        keep,
        ordered,
    )


def find_orphans(
    context: Context,
    now: datetime,
    *,
    tier: str | None,
    limit: int,
    offset: int,
    keep: int = ORPHANS_KEPT,
) -> Orphans:
    """One page of :func:`list_orphans`: ``limit`` orphans from ``offset`` (below ``keep``)."""
    if offset >= keep:  # refused before every reference is read for nothing
        raise offset_past_kept(offset, keep)
    return list_orphans(context, now, tier=tier, keep=keep).page(limit=limit, offset=offset)


class OrphanFinder:
    """:func:`list_orphans` for the server: one listing per tier (or for every tier) is
    told at most once per ``ttl`` seconds and every page is sliced from it, so a reader
    paging through the list does not have every reference re-read per page. Entries older
    than ``ttl`` are dropped on every call, so at most one listing per declared tier and
    one for all tiers are held, each of ``keep`` orphans at most."""

    def __init__(
        self,
        context: Context,
        ttl: float = 60.0,
        *,
        keep: int = ORPHANS_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.ttl = ttl
        self.keep = keep
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str | None, tuple[float, OrphanList]] = {}

    @property
    def held(self) -> int:
        """How many listings are held now (expired ones are dropped at the next call)."""
        with self._lock:
            return len(self._cache)

    def page(self, now: datetime, *, tier: str | None, limit: int, offset: int) -> Orphans:
        if offset >= self.keep:  # refused before any listing is told for it
            raise offset_past_kept(offset, self.keep)
        with self._lock:
            moment = self.clock()
            self._cache = {
                key: entry for key, entry in self._cache.items() if moment - entry[0] < self.ttl
            }
            hit = self._cache.get(tier)
            if hit is None:
                listing = list_orphans(self.context, now, tier=tier, keep=self.keep)
                hit = self._cache[tier] = (self.clock(), listing)
            return hit[1].page(limit=limit, offset=offset)
