"""The cost of a plan: what its requests, retrievals and early deletions cost once, and how
its storage bill changes per month.

Prices are per tier (:class:`Prices`): whatever ``[tiers.NAME.cost]`` gives, the rest from
:data:`PRICE_TABLE` by the tier's store and ``storage_class`` (``file://`` and
``memory://`` tiers cost nothing unless told). Figures are in price units: the table's are
USD list prices, and a user's own prices are in whatever unit they are written in.

Per object (a GB is 2^30 bytes and a month 30 days, as AWS bills them):

- ``migrate`` from A to B: one GET on A, one PUT on B (an object above the single-request
  limit goes up in parts: one PUT per part, plus the upload's create and complete), the
  bytes retrieved from A, and early deletion on A; per month it saves its storage on A
  and adds it on B, each billed at no less than that tier's ``min_object_size``.
- ``expire``, ``delete-orphan``, ``quarantine``: deletes are free requests (a quarantine's
  move is one copy: a PUT), early deletion on the tier, and the object's storage saved.
- Early deletion: an object removed from a tier before ``min_days`` since it arrived there
  is billed for the days left, at its billed size.

A plan counts these as actions are added (per rule and tier, running sums: no list of
actions is kept), and says per rule and in total what is paid once (``one_off``), the
monthly change (negative: a saving), the months it takes to pay back, and warnings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from shelflife.base.units import format_money
from shelflife.config.model import TierConfig
from shelflife.model.actions import Action, ActionKind

GB = 1024**3  # AWS bills a "GB" as 2^30 bytes
MONTH_DAYS = 30
KIB = 1024
MIN_PART = 5 * 1024**2  # the smallest multipart part S3 accepts (the stores round up to it)
SMALL_SHARE = 0.25  # warn when more than this share of a rule's objects are billed up
HORIZON_MONTHS = 12.0  # the payback a move should reach when its destination has no min_days
CURRENCY = "USD"
BASIS = (
    "price units: USD list prices unless a tier's [tiers.NAME.cost] sets its own; "
    "a GB is 2^30 bytes, a month 30 days"
)


@dataclass(frozen=True, slots=True)
class Prices:
    """A tier's prices (price units) and billing minimums."""

    gb_month: float = 0.0
    per_1k_put: float = 0.0
    per_1k_get: float = 0.0
    per_gb_retrieval: float = 0.0
    min_days: float = 0.0
    min_object_size: int = 0


PRICE_FIELDS = tuple(item.name for item in fields(Prices))
FREE = Prices()  # a tier with no charge and no minimum


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One line of the built-in table: a store kind (URL scheme) and storage class."""

    scheme: str
    storage_class: str
    prices: Prices
    note: str = ""


def _p(gb: float, put: float, get: float, retrieval: float, days: float, small: int) -> Prices:
    return Prices(gb, put, get, retrieval, days, small)


# The defaults, in one place (docs/costs.md renders this table; tests/test_cost.py checks
# that it does). List prices: AWS S3 us-east-1, Azure Blob East US LRS, Google Cloud Storage
# us-central1, as published in 2025, first volume band; per 1,000 requests; per GB-month.
PRICE_TABLE: tuple[PriceRow, ...] = (
    PriceRow("s3", "STANDARD", _p(0.023, 0.005, 0.0004, 0, 0, 0), "the default class"),
    PriceRow("s3", "STANDARD_IA", _p(0.0125, 0.01, 0.001, 0.01, 30, 128 * KIB)),
    PriceRow("s3", "ONEZONE_IA", _p(0.01, 0.01, 0.001, 0.01, 30, 128 * KIB)),
    PriceRow(
        "s3",
        "INTELLIGENT_TIERING",
        _p(0.023, 0.005, 0.0004, 0, 0, 0),
        "frequent-access tier; monitoring fee not counted",
    ),
    PriceRow("s3", "GLACIER_IR", _p(0.004, 0.02, 0.01, 0.03, 90, 128 * KIB)),
    PriceRow(
        "s3",
        "GLACIER",
        _p(0.0036, 0.03, 0.05, 0.01, 90, 40 * KIB),
        "GET: a standard restore; 40 KiB: the per-object metadata billed",
    ),
    PriceRow(
        "s3",
        "DEEP_ARCHIVE",
        _p(0.00099, 0.05, 0.10, 0.02, 180, 40 * KIB),
        "GET: a standard restore; 40 KiB: the per-object metadata billed",
    ),
    PriceRow("s3", "REDUCED_REDUNDANCY", _p(0.024, 0.005, 0.0004, 0, 0, 0), "legacy class"),
    PriceRow("az", "Hot", _p(0.018, 0.005, 0.0004, 0, 0, 0), "the default tier"),
    PriceRow("az", "Cool", _p(0.01, 0.01, 0.001, 0.01, 30, 0)),
    PriceRow("az", "Cold", _p(0.0036, 0.018, 0.01, 0.03, 90, 0)),
    PriceRow(
        "az",
        "Archive",
        _p(0.00099, 0.01, 0.5, 0.02, 180, 0),
        "GET: a standard-priority rehydration",
    ),
    PriceRow("gs", "STANDARD", _p(0.02, 0.005, 0.0004, 0, 0, 0), "the default class"),
    PriceRow("gs", "NEARLINE", _p(0.01, 0.01, 0.001, 0.01, 30, 0)),
    PriceRow("gs", "COLDLINE", _p(0.004, 0.02, 0.01, 0.02, 90, 0)),
    PriceRow("gs", "ARCHIVE", _p(0.0012, 0.05, 0.05, 0.05, 365, 0)),
)
DEFAULT_CLASS = {"s3": "STANDARD", "az": "Hot", "gs": "STANDARD"}
_TABLE = {(row.scheme, row.storage_class): row.prices for row in PRICE_TABLE}
_SCHEMES = {"azure": "az"}


def price_table_markdown() -> str:
    """:data:`PRICE_TABLE` as the Markdown table docs/costs.md shows."""
    lines = [
        "| store | storage class | GB-month | 1k PUT | 1k GET | GB retrieved | min days "
        "| min object size | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in PRICE_TABLE:
        p = row.prices
        small = f"{p.min_object_size // KIB} KiB" if p.min_object_size else "–"
        lines.append(
            f"| {row.scheme}:// | `{row.storage_class}` | {p.gb_month:g} | {p.per_1k_put:g} "
            f"| {p.per_1k_get:g} | {p.per_gb_retrieval:g} | {p.min_days:g} | {small} "
            f"| {row.note} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TierPrices:
    """A tier's prices resolved, and how it sends an object (for counting PUTs)."""

    prices: Prices
    source: str  # where the prices came from, for the reader
    single_put: int = 8 * 1024**2  # the largest object sent in one request
    part_size: int = 8 * 1024**2

    def puts(self, size: int) -> int:
        """Write requests to send ``size`` bytes: one, or each part plus create and complete."""
        if size <= self.single_put:
            return 1
        return math.ceil(size / max(self.part_size, MIN_PART)) + 2

    def as_json(self) -> dict[str, Any]:
        return {
            **{name: getattr(self.prices, name) for name in PRICE_FIELDS},
            "source": self.source,
        }


def tier_prices(tier: TierConfig, single_put: int | None = None) -> TierPrices:
    """``tier``'s prices: its ``[tiers.NAME.cost]`` fields over the table's row for its
    store and storage class. ``single_put``: the largest object a migration sends to it in
    one request (at least its ``multipart_threshold``)."""
    scheme = _SCHEMES.get(tier.scheme, tier.scheme)
    storage_class = tier.storage_class or DEFAULT_CLASS.get(scheme)
    row = _TABLE.get((scheme, storage_class or ""))
    given = {
        name: value for name in PRICE_FIELDS if (value := getattr(tier.cost, name)) is not None
    }
    if row is None:
        base, source = Prices(), f"{scheme}:// (free unless set)"
    else:
        base, source = row, f"table: {scheme}:// {storage_class}"
    if given:
        source = "config" if len(given) == len(PRICE_FIELDS) else f"config over {source}"
    values = {name: getattr(base, name) for name in PRICE_FIELDS} | given
    return TierPrices(
        prices=Prices(**values),
        source=source,
        single_put=max(single_put or 0, tier.multipart_threshold),
        part_size=tier.multipart_chunk_size,
    )


# -- the arithmetic ----------------------------------------------------------------------------


@dataclass(slots=True)
class CostSums:
    """What some actions cost (price units), summed as they are added."""

    objects: int = 0
    bytes: int = 0
    requests: float = 0.0
    retrieval: float = 0.0
    early_deletion: float = 0.0
    monthly_change: float = 0.0
    small_objects: int = 0  # billed up to the destination's min_object_size
    early_objects: int = 0  # removed before the source's min_days

    @property
    def one_off(self) -> float:
        return self.requests + self.retrieval + self.early_deletion

    def merge(self, other: CostSums) -> None:
        # once per planned action: the fields spelled out, not looked up by name
        self.objects += other.objects
        self.bytes += other.bytes
        self.requests += other.requests
        self.retrieval += other.retrieval
        self.early_deletion += other.early_deletion
        self.monthly_change += other.monthly_change
        self.small_objects += other.small_objects
        self.early_objects += other.early_objects

    def payback_months(self) -> float | None:
        """Months of savings that pay for the one-off cost (0: nothing to pay back; None:
        it saves nothing, so it never pays back)."""
        if self.monthly_change >= 0:
            return 0.0 if self.one_off == 0 and self.monthly_change == 0 else None
        return self.one_off / -self.monthly_change


def billed(size: int, prices: Prices) -> int:
    """The bytes a tier bills an object of ``size`` for."""
    return max(size, prices.min_object_size)


def storage_month(size: int, prices: Prices) -> float:
    """What an object of ``size`` costs per month on a tier."""
    return billed(size, prices) / GB * prices.gb_month


def early_deletion(size: int, prices: Prices, arrived: datetime | None, now: datetime) -> float:
    """The charge for removing an object from a tier at ``now`` that arrived there at
    ``arrived``: the days left of the tier's ``min_days``, at its billed size."""
    if not prices.min_days or arrived is None:
        return 0.0
    days = (now - arrived).total_seconds() / 86400
    left = prices.min_days - max(days, 0.0)
    if left <= 0:
        return 0.0
    return storage_month(size, prices) * left / MONTH_DAYS


def action_cost(
    action: Action,
    source: TierPrices,
    destination: TierPrices | None,
    *,
    arrived: datetime | None,
    now: datetime,
) -> CostSums:
    """What one action costs: see the module docstring."""
    size = action.bytes
    here = source.prices
    result = CostSums(objects=1, bytes=size)
    result.early_deletion = early_deletion(size, here, arrived, now)
    result.early_objects = int(result.early_deletion > 0)
    result.monthly_change = -storage_month(size, here)
    if action.action == ActionKind.MIGRATE and destination is not None:
        there = destination.prices
        result.requests = here.per_1k_get / 1000 + there.per_1k_put / 1000 * destination.puts(size)
        result.retrieval = size / GB * here.per_gb_retrieval
        result.monthly_change += storage_month(size, there)
        result.small_objects = int(size < there.min_object_size)
    elif action.action == ActionKind.QUARANTINE:
        result.requests = here.per_1k_put / 1000  # the copy under the trash prefix
    return result


class PlanCost:
    """A plan's cost, counted as actions are added (per rule and tier), or as read back
    from a saved plan (:meth:`from_json`: figures only, nothing more is added)."""

    def __init__(self, prices: Mapping[str, TierPrices], now: datetime) -> None:
        self.prices = dict(prices)
        self.now = now
        self.sums: dict[tuple[str, str], CostSums] = {}
        self.rules: dict[str, tuple[str, str | None]] = {}  # rule → (action kind, to)
        self._saved: dict[str, Any] | None = None
        # Tiers that charge nothing at all: an action between them only counts (exactly
        # what action_cost would sum), without the arithmetic, once per planned action.
        self._free = {name for name, tier in self.prices.items() if tier.prices == FREE}

    def add(self, action: Action, arrived: datetime | None = None) -> None:
        source = self.prices.get(action.tier)
        if source is None or self._saved is not None:
            return
        sums = self.sums.get((action.rule, action.tier))
        if sums is None:
            sums = self.sums[(action.rule, action.tier)] = CostSums()
            self.rules.setdefault(action.rule, (str(action.action), action.to))
        if action.tier in self._free and (action.to is None or action.to in self._free):
            sums.objects += 1
            sums.bytes += action.bytes
            return
        destination = None if action.to is None else self.prices.get(action.to)
        sums.merge(action_cost(action, source, destination, arrived=arrived, now=self.now))

    def discard(self, rule: str, tier: str) -> None:
        """Forget what ``rule`` planned on ``tier`` (a refused rule)."""
        self.sums.pop((rule, tier), None)

    # -- reading ------------------------------------------------------------------------------

    def rule_sums(self) -> dict[str, CostSums]:
        result: dict[str, CostSums] = {}
        for (rule, _tier), sums in self.sums.items():
            result.setdefault(rule, CostSums()).merge(sums)
        return result

    def total(self) -> CostSums:
        result = CostSums()
        for sums in self.sums.values():
            result.merge(sums)
        return result

    def warnings_for(self, rule: str, sums: CostSums) -> list[str]:
        """Where ``rule``'s actions cost more than they save, or small objects are billed up."""
        kind, to = self.rules.get(rule, ("", None))
        found: list[str] = []
        destination = None if to is None else self.prices.get(to)
        if kind == ActionKind.MIGRATE and sums.objects:
            horizon = (
                destination.prices.min_days / MONTH_DAYS
                if destination is not None and destination.prices.min_days
                else HORIZON_MONTHS
            )
            payback = sums.payback_months()
            why = (
                f"tier {to}'s min_days ({destination.prices.min_days:g})"
                if destination is not None and destination.prices.min_days
                else f"{HORIZON_MONTHS:g} months"
            )
            if payback is None and sums.one_off > 0:
                found.append(
                    f"rule {rule}: moving {sums.objects} objects to {to} costs "
                    f"{format_money(sums.one_off)} once and saves nothing per month "
                    f"({format_money(sums.monthly_change)} a month): it costs more than it saves"
                )
            elif payback is not None and payback > horizon:
                found.append(
                    f"rule {rule}: moving {sums.objects} objects to {to} costs "
                    f"{format_money(sums.one_off)} once and saves "
                    f"{format_money(-sums.monthly_change)} a month: it pays back in "
                    f"{payback:.1f} months, longer than {why}"
                )
        if destination is not None and sums.objects and sums.small_objects:
            share = sums.small_objects / sums.objects
            if share > SMALL_SHARE:
                size = destination.prices.min_object_size
                found.append(
                    f"rule {rule}: {sums.small_objects} of {sums.objects} objects "
                    f"({share:.0%}) are smaller than tier {to}'s min_object_size "
                    f"({size // KIB} KiB) and are billed as that size"
                )
        if kind != ActionKind.MIGRATE and sums.early_deletion > 0:
            found.append(
                f"rule {rule}: {sums.early_objects} objects are deleted before their tier's "
                f"min_days: {format_money(sums.early_deletion)} in early-deletion charges"
            )
        return found

    def as_json(self) -> dict[str, Any]:
        """``{"currency", "basis", "tiers", "rules": {RULE: figures}, "total", "warnings"}``."""
        if self._saved is not None:
            return self._saved
        rules: dict[str, Any] = {}
        warnings: list[str] = []
        for rule, sums in self.rule_sums().items():
            kind, to = self.rules.get(rule, ("", None))
            found = self.warnings_for(rule, sums)
            warnings += found
            rules[rule] = {
                "action": kind,
                **({"to": to} if to else {}),
                **_figures(sums),
                "objects": sums.objects,
                "bytes": sums.bytes,
                "small_objects": sums.small_objects,
                "early_objects": sums.early_objects,
                "warnings": found,
            }
        return {
            "currency": CURRENCY,
            "basis": BASIS,
            "tiers": {name: prices.as_json() for name, prices in self.prices.items()},
            "rules": rules,
            "total": _figures(self.total()),
            "warnings": warnings,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any], now: datetime) -> PlanCost:
        result = cls({}, now)
        result._saved = body
        return result


def _round(value: float) -> float:
    return round(value, 6) + 0.0  # no -0.0


def _figures(sums: CostSums) -> dict[str, Any]:
    payback = sums.payback_months()
    return {
        "one_off": _round(sums.one_off),
        "requests": _round(sums.requests),
        "retrieval": _round(sums.retrieval),
        "early_deletion": _round(sums.early_deletion),
        "monthly_change": _round(sums.monthly_change),
        "payback_months": None if payback is None else round(payback, 2),
    }
