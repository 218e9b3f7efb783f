"""The cost of a plan: the arithmetic with hand-computed figures, the price table (code and
docs the same), config checks, and a plan counting its cost as it is built."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife.config.load import parse_config
from shelflife.config.model import RuleConfig, TierConfig
from shelflife.engine.planner import plan
from shelflife.errors import ConfigError
from shelflife.model.actions import Action
from shelflife.model.cost import (
    GB,
    KIB,
    PlanCost,
    Prices,
    TierPrices,
    action_cost,
    early_deletion,
    price_table_markdown,
    tier_prices,
)
from shelflife.model.plan import Plan
from shelflife.model.selection import ObjectView
from tests.support.planning import ListInventory

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MIB = 1024**2
ROOT = Path(__file__).resolve().parent.parent


def tier(url: str = "s3://bucket/pre", **fields: Any) -> TierConfig:
    return TierConfig.model_validate({"url": url, **fields})


def prices(**fields: Any) -> TierPrices:
    return TierPrices(Prices(**fields), "test", single_put=8 * MIB, part_size=8 * MIB)


def migrate(size: int, tier: str = "a", to: str = "b", rule: str = "r") -> Action:
    return Action("migrate", rule, tier, "k", size, to=to)


# -- the table ---------------------------------------------------------------------------------


def test_defaults_come_from_the_table_by_store_and_class() -> None:
    standard = tier_prices(tier())
    assert standard.prices == Prices(0.023, 0.005, 0.0004, 0, 0, 0)
    assert standard.source == "table: s3:// STANDARD"
    glacier = tier_prices(tier(storage_class="GLACIER"))
    assert (glacier.prices.gb_month, glacier.prices.min_days) == (0.0036, 90)
    assert glacier.prices.min_object_size == 40 * KIB
    assert tier_prices(tier("azure://c/p", storage_class="Cool")).prices.min_days == 30
    assert tier_prices(tier("az://c/p")).source == "table: az:// Hot"
    assert tier_prices(tier("gs://b", storage_class="ARCHIVE")).prices.min_days == 365
    free = tier_prices(tier("file:///tmp/x"))
    assert free.prices == Prices()
    assert free.source == "file:// (free unless set)"


def test_a_tier_overrides_any_price() -> None:
    found = tier_prices(
        tier(storage_class="STANDARD_IA", cost={"gb_month": 0.01, "min_object_size": "64KiB"})
    )
    assert found.prices == Prices(0.01, 0.01, 0.001, 0.01, 30, 64 * KIB)
    assert found.source == "config over table: s3:// STANDARD_IA"
    every = {
        "gb_month": 1,
        "per_1k_put": 2,
        "per_1k_get": 3,
        "per_gb_retrieval": 4,
        "min_days": 5,
        "min_object_size": 6,
    }
    assert tier_prices(tier("file:///tmp/x", cost=every)).prices == Prices(1, 2, 3, 4, 5, 6)
    assert tier_prices(tier("file:///tmp/x", cost=every)).source == "config"


def test_the_docs_table_is_the_code_table() -> None:
    text = (ROOT / "docs" / "costs.md").read_text(encoding="utf-8")
    start = text.index("<!-- prices: begin -->\n") + len("<!-- prices: begin -->\n")
    end = text.index("<!-- prices: end -->")
    assert text[start:end] == price_table_markdown(), (
        "docs/costs.md's table is not shelflife.model.cost.PRICE_TABLE: run "
        "`python scripts/cost_table.py` and commit the result"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gb_month", -0.01),
        ("per_1k_put", -1),
        ("per_1k_get", -1),
        ("per_gb_retrieval", -2),
        ("min_days", -30),
        ("min_object_size", -5),
    ],
)
def test_a_negative_price_is_a_config_error_naming_the_field(field: str, value: float) -> None:
    raw = {"tiers": {"cold": {"url": "s3://b/p", "cost": {field: value}}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, base_dir=Path("."), source="test", env={})
    assert caught.value.path == f"tiers.cold.cost.{field}"
    assert caught.value.exit_code == 2


def test_an_unknown_price_is_a_config_error() -> None:
    raw = {"tiers": {"cold": {"url": "s3://b/p", "cost": {"gb_mnth": 1}}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, base_dir=Path("."), source="test", env={})
    assert caught.value.path == "tiers.cold.cost.gb_mnth"


# -- the arithmetic ----------------------------------------------------------------------------


def test_a_move_costs_a_get_a_put_and_the_retrieval_and_changes_storage() -> None:
    ia = prices(gb_month=0.0125, per_1k_put=0.01, per_1k_get=0.001, per_gb_retrieval=0.01)
    standard = prices(gb_month=0.023, per_1k_put=0.005, per_1k_get=0.0004)
    # 2 GiB from IA to STANDARD (a recall), in 8 MiB parts: 256 parts + create + complete
    cost = action_cost(migrate(2 * GB), ia, standard, arrived=NOW - 100 * DAY, now=NOW)
    assert cost.requests == pytest.approx(0.001 / 1000 + 258 * 0.005 / 1000)  # 0.001291
    assert cost.retrieval == pytest.approx(0.02)  # 2 GB x 0.01
    assert cost.early_deletion == 0  # 100 days > 30
    assert cost.monthly_change == pytest.approx(2 * (0.023 - 0.0125))  # +0.021
    assert cost.one_off == pytest.approx(0.021291)
    assert cost.payback_months() is None  # it costs more per month: never pays back


def test_an_object_up_to_the_single_put_limit_is_one_put() -> None:
    dst = TierPrices(Prices(per_1k_put=1000), "t", single_put=32 * MIB, part_size=1 * MIB)
    assert dst.puts(32 * MIB) == 1
    # above it, parts of at least 5 MiB (the stores round a smaller part size up)
    assert dst.puts(32 * MIB + 1) == 7 + 2
    cost = action_cost(migrate(40 * MIB), prices(), dst, arrived=None, now=NOW)
    assert cost.requests == pytest.approx(8 + 2)  # 40 MiB / 5 MiB parts, 1 per request


def test_early_deletion_bills_the_days_left_at_the_billed_size() -> None:
    glacier_ir = Prices(gb_month=0.004, min_days=90, min_object_size=128 * KIB)
    # 3 GiB, 30 days on the tier: 60 days left = 2 months x 3 GB x 0.004
    assert early_deletion(3 * GB, glacier_ir, NOW - 30 * DAY, NOW) == pytest.approx(0.024)
    # 1 KiB is billed as 128 KiB: 128 KiB / 1 GiB x 0.004 x 90/30 (arrived just now)
    assert early_deletion(KIB, glacier_ir, NOW, NOW) == pytest.approx(128 / 1024**2 * 0.012)
    assert early_deletion(3 * GB, glacier_ir, NOW - 90 * DAY, NOW) == 0
    assert early_deletion(3 * GB, Prices(gb_month=1), NOW, NOW) == 0  # no minimum


def test_a_move_to_a_cheaper_tier_saves_and_pays_back() -> None:
    standard = prices(gb_month=0.023, per_1k_put=0.005, per_1k_get=0.0004)
    ia = TierPrices(
        Prices(gb_month=0.0125, per_1k_put=0.01, min_days=30, min_object_size=128 * KIB),
        "t",
        single_put=5 * GB,  # sent in one request
    )
    cost = action_cost(migrate(GB), standard, ia, arrived=NOW - 40 * DAY, now=NOW)
    assert cost.requests == pytest.approx(0.0000104)  # 0.0004/1000 + 0.01/1000
    assert cost.monthly_change == pytest.approx(-0.0105)  # 0.0125 - 0.023
    assert cost.payback_months() == pytest.approx(0.0000104 / 0.0105)
    assert cost.small_objects == 0
    small = action_cost(migrate(KIB), standard, ia, arrived=None, now=NOW)
    assert small.small_objects == 1
    # billed 128 KiB on IA against 1 KiB on STANDARD
    assert small.monthly_change == pytest.approx((128 * 0.0125 - 0.023) * KIB / GB)


def test_expire_is_free_requests_early_deletion_and_a_saving() -> None:
    ia = prices(gb_month=0.0125, per_1k_put=0.01, min_days=30)
    expire = Action("expire", "ret", "a", "k", GB)
    cost = action_cost(expire, ia, None, arrived=NOW - 10 * DAY, now=NOW)
    assert cost.requests == 0
    assert cost.early_deletion == pytest.approx(0.0125 * 20 / 30)
    assert cost.monthly_change == pytest.approx(-0.0125)
    assert cost.payback_months() == pytest.approx(20 / 30)
    quarantine = Action("quarantine", "orph", "a", "k", GB)
    moved = action_cost(quarantine, ia, None, arrived=NOW - 40 * DAY, now=NOW)
    assert (moved.requests, moved.early_deletion) == (pytest.approx(0.00001), 0)


# -- a plan counting its cost ------------------------------------------------------------------


def small_to_glacier_plan(objects: int, size: int) -> Plan:
    standard = TierPrices(Prices(0.023, 0.005, 0.0004), "t")
    glacier = TierPrices(Prices(0.0036, 0.03, 0.05, 0.01, 90, 40 * KIB), "t")
    result = Plan(now=NOW, cost=PlanCost({"hot": standard, "cold": glacier}, NOW))
    rule = RuleConfig.model_validate(
        {"id": "archive", "tier": "hot", "action": "migrate", "to": "cold", "after": "1d"}
    )
    held = [ObjectView(key=f"k{i:04d}", size=size, modified=NOW - 10 * DAY) for i in range(objects)]
    return plan([rule], ListInventory({"hot": held}), NOW, tiers=["hot", "cold"], into=result)


def test_many_small_objects_to_glacier_cost_more_than_they_save() -> None:
    result = small_to_glacier_plan(1000, KIB)
    body = result.header_json()["cost"]
    rule = body["rules"]["archive"]
    # requests: 1000 x (0.0004 + 0.03) / 1000; no retrieval from STANDARD
    assert rule["requests"] == pytest.approx(0.0304)
    assert rule["one_off"] == pytest.approx(0.0304)
    # each 1 KiB object is billed 40 KiB on GLACIER: (40 x 0.0036 - 0.023) KiB/GiB a month
    monthly = 1000 * (40 * 1024 * 0.0036 - 1024 * 0.023) / GB
    assert rule["monthly_change"] == pytest.approx(monthly, abs=1e-6)
    assert rule["payback_months"] is None
    assert (rule["small_objects"], rule["objects"], rule["to"]) == (1000, 1000, "cold")
    assert body["total"]["one_off"] == pytest.approx(0.0304)
    assert any("costs more than it saves" in w for w in rule["warnings"])
    assert any("1000 of 1000 objects (100%)" in w for w in rule["warnings"])
    assert body["warnings"] == rule["warnings"]


def test_large_objects_to_glacier_pay_back_and_raise_no_warning() -> None:
    result = small_to_glacier_plan(10, GB)
    rule = result.header_json()["cost"]["rules"]["archive"]
    # one-off: 10 x (a GET + 128 parts of 8 MiB, the upload's create and complete)
    assert rule["requests"] == pytest.approx(10 * (0.0004 + 130 * 0.03) / 1000)
    assert rule["monthly_change"] == pytest.approx(10 * (0.0036 - 0.023))
    assert rule["payback_months"] == pytest.approx(0.039004 / 0.194, abs=0.01)  # < 3 months
    assert rule["warnings"] == []


def test_a_slow_payback_is_warned_against_the_destinations_min_days() -> None:
    standard = TierPrices(Prices(0.023, 0.005, 0.0004), "t")
    # 1 per PUT, a 60-day minimum, 1 GiB in one request
    costly = TierPrices(Prices(0.022, 1000, 0, 0, 60, 0), "t", single_put=5 * GB)
    cost = PlanCost({"hot": standard, "cold": costly}, NOW)
    cost.add(migrate(GB, "hot", "cold"), NOW - 10 * DAY)
    body = cost.as_json()
    # one-off 1.0000004, saving 0.001 a month: 1000 months > 60 days
    assert body["rules"]["r"]["payback_months"] == pytest.approx(1000.0, rel=1e-3)
    assert "longer than tier cold's min_days (60)" in body["warnings"][0]


def test_a_refused_rule_takes_its_cost_away_and_a_saved_plan_keeps_it() -> None:
    result = small_to_glacier_plan(3, KIB)
    header = result.header_json()
    assert header["cost"]["rules"]["archive"]["objects"] == 3
    again = Plan.from_json({**header, "actions": [a.as_json() for a in result.actions]})
    assert again.header_json()["cost"] == header["cost"]
    result.discard("archive", "hot", result.totals())
    assert result.header_json()["cost"]["rules"] == {}
    assert result.header_json()["cost"]["total"]["one_off"] == 0


def test_a_plan_without_prices_has_no_cost() -> None:
    assert "cost" not in Plan(now=NOW).header_json()


def test_a_plan_sums_exactly_what_each_action_costs_free_tiers_included() -> None:
    """PlanCost.add counts an action between tiers that charge nothing without the
    arithmetic; what it sums must still be what action_cost gives, field by field."""
    charged = prices(
        gb_month=0.0125,
        per_1k_put=0.01,
        per_gb_retrieval=0.01,
        min_days=30,
        min_object_size=KIB * 128,
    )
    free = prices()
    tiers = {"free": free, "other-free": free, "charged": charged}
    actions = [
        (Action("delete-orphan", "r", "free", "k", 3 * KIB), NOW),
        (Action("quarantine", "r", "free", "k", KIB), None),
        (migrate(GB, "free", "other-free"), NOW - DAY),
        (migrate(GB, "free", "charged"), NOW - DAY),
        (migrate(KIB, "free", "charged"), NOW - DAY),
        (migrate(5 * MIB, "charged", "free"), NOW - 2 * DAY),
        (Action("expire", "r", "charged", "k", GB), NOW - 10 * DAY),
    ]
    plan_cost = PlanCost(tiers, NOW)
    expected: dict[str, Any] = {}
    for action, arrived in actions:
        plan_cost.add(action, arrived)
        destination = None if action.to is None else tiers[action.to]
        one = action_cost(action, tiers[action.tier], destination, arrived=arrived, now=NOW)
        for item in dataclass_fields(one):
            expected[item.name] = expected.get(item.name, 0) + getattr(one, item.name)
    total = plan_cost.total()
    assert expected["objects"] == len(actions)
    assert all(value for value in expected.values())  # every field is exercised
    for name, value in expected.items():
        assert getattr(total, name) == pytest.approx(value), name
