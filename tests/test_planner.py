"""The planner, table-driven: rules × inventories × now, no I/O at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shelflife.config.model import ReferenceConfig, RuleConfig
from shelflife.engine.planner import plan
from shelflife.model.plan import Plan
from shelflife.model.selection import ObjectView, TierState
from tests.support.planning import ListInventory

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def obj(key: str, age_days: float, size: int = 100, **extra: Any) -> ObjectView:
    return ObjectView(key=key, size=size, modified=NOW - age_days * DAY, **extra)


def rule(**fields: Any) -> RuleConfig:
    return RuleConfig.model_validate(fields)


REFS = (
    ReferenceConfig(database="app", table="jobs", column="path", on_expire="null"),
    ReferenceConfig(database="app", table="uploads", column="path", on_expire="block"),
    ReferenceConfig(database="app", table="thumbs", column="path", on_expire="delete-row"),
)


def planned(result: Plan) -> list[tuple[str, str, str, str]]:
    return [(a.action, a.rule, a.tier, a.key) for a in result.actions]


def skipped(result: Plan) -> list[tuple[str, str, str]]:
    return [(s.rule, s.key, s.reason) for s in result.skipped]


CASES: list[tuple[str, list[dict[str, Any]], dict[str, list[ObjectView]], datetime, Any, Any]] = [
    (
        "expire takes only what is older than after",
        [{"id": "ret", "tier": "cloud", "action": "expire", "after": "90d"}],
        {"cloud": [obj("old", 91), obj("young", 89), obj("edge", 90)]},
        NOW,
        [("expire", "ret", "cloud", "old")],
        [],
    ),
    (
        "--at a later instant ages everything",
        [{"id": "ret", "tier": "cloud", "action": "expire", "after": "90d"}],
        {"cloud": [obj("old", 91), obj("young", 89)]},
        NOW + 2 * DAY,
        [("expire", "ret", "cloud", "old"), ("expire", "ret", "cloud", "young")],
        [],
    ),
    (
        "expire filters by prefix, suffix, size and tags",
        [
            {
                "id": "ret",
                "tier": "cloud",
                "action": "expire",
                "after": "1d",
                "filter": {
                    "prefix": "tmp/",
                    "suffix": ".mp4",
                    "min_size": "10B",
                    "max_size": "1KB",
                    "tags": {"kind": "render"},
                },
            }
        ],
        {
            "cloud": [
                obj("tmp/a.mp4", 5, 100, tags={"kind": "render"}),
                obj("tmp/b.mp4", 5, 100, tags={"kind": "upload"}),
                obj("tmp/c.mp4", 5, 100),
                obj("tmp/d.mov", 5, 100, tags={"kind": "render"}),
                obj("keep/e.mp4", 5, 100, tags={"kind": "render"}),
                obj("tmp/f.mp4", 5, 5, tags={"kind": "render"}),
                obj("tmp/g.mp4", 5, 5000, tags={"kind": "render"}),
            ]
        },
        NOW,
        [("expire", "ret", "cloud", "tmp/a.mp4")],
        [],
    ),
    (
        "on_expire: block keeps the object, null and delete-row say what happens to rows",
        [{"id": "ret", "tier": "cloud", "action": "expire", "after": "1d"}],
        {
            "cloud": [
                obj("nulled", 5, refs=frozenset({0})),
                obj("blocked", 5, refs=frozenset({0, 1})),
                obj("row-deleted", 5, refs=frozenset({2})),
                obj("unknown-source", 5, refs=frozenset({-1})),
            ]
        },
        NOW,
        [("expire", "ret", "cloud", "nulled"), ("expire", "ret", "cloud", "row-deleted")],
        [
            ("ret", "blocked", "referenced by app.uploads.path (on_expire = block)"),
            ("ret", "unknown-source", "referenced by an undeclared reference (on_expire = block)"),
        ],
    ),
    (
        "pinned and leased objects never expire; they are listed as skipped",
        [{"id": "ret", "tier": "cloud", "action": "expire", "after": "1d"}],
        {"cloud": [obj("pinned", 5, pinned=True), obj("leased", 5, leased=True), obj("x", 5)]},
        NOW,
        [("expire", "ret", "cloud", "x")],
        [("ret", "leased", "under an upload lease"), ("ret", "pinned", "pinned")],
    ),
    (
        "orphans: unreferenced and past grace only; trash is never a candidate",
        [{"id": "gc", "tier": "*", "action": "collect-orphans", "grace": "7d", "max_fraction": 1}],
        {
            "local": [
                obj("orphan", 8),
                obj("fresh-orphan", 6),
                obj("referenced", 8, refs=frozenset({0})),
                obj(".shelflife-trash/20260101T000000000000/x", 30),
            ]
        },
        NOW,
        [("delete-orphan", "gc", "local", "orphan")],
        [],
    ),
    (
        "orphans in quarantine mode plan quarantine actions",
        [
            {
                "id": "gc",
                "tier": "local",
                "action": "collect-orphans",
                "grace": "0s",
                "mode": "quarantine",
                "max_fraction": 1,
            }
        ],
        {"local": [obj("a", 1), obj("b", 1, refs=frozenset({0}))]},
        NOW,
        [("quarantine", "gc", "local", "a")],
        [],
    ),
    (
        "migrate after an age, to another tier",
        [{"id": "cold", "tier": "local", "action": "migrate", "to": "cloud", "after": "30d"}],
        {"local": [obj("a", 31), obj("b", 29)], "cloud": []},
        NOW,
        [("migrate", "cold", "local", "a")],
        [],
    ),
    (
        "an earlier rule takes an object: a later one leaves it alone",
        [
            {"id": "first", "tier": "local", "action": "migrate", "to": "cloud", "after": "1d"},
            {"id": "second", "tier": "local", "action": "expire", "after": "1d"},
        ],
        {"local": [obj("a", 5), obj("pinned", 5, pinned=True)], "cloud": []},
        NOW,
        [("migrate", "first", "local", "a")],
        [("first", "pinned", "pinned")],
    ),
    (
        "a later rule acts on what an earlier one did not select",
        [
            {
                "id": "tmp",
                "tier": "local",
                "action": "collect-orphans",
                "grace": "1d",
                "filter": {"prefix": "tmp/"},
                "max_fraction": 1,
            },
            {
                "id": "all",
                "tier": "local",
                "action": "collect-orphans",
                "grace": "10d",
                "max_fraction": 1,
            },
        ],
        {"local": [obj("tmp/a", 2), obj("b", 11), obj("c", 2)]},
        NOW,
        [("delete-orphan", "tmp", "local", "tmp/a"), ("delete-orphan", "all", "local", "b")],
        [],
    ),
]


@pytest.mark.parametrize(
    ("rules", "inventory", "now", "actions", "skips"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan_cases(
    rules: list[dict[str, Any]],
    inventory: dict[str, list[ObjectView]],
    now: datetime,
    actions: list[tuple[str, str, str, str]],
    skips: list[tuple[str, str, str]],
) -> None:
    tiers = list(inventory) if "cloud" in inventory else [*inventory, "cloud"]
    result = plan(
        [rule(**r) for r in rules], ListInventory(inventory), now, tiers=tiers, references=REFS
    )
    assert planned(result) == actions
    assert sorted(skipped(result)) == sorted(skips)
    assert result.now == now


def test_plan_is_deterministic_and_round_trips_through_json() -> None:
    rules = [rule(id="ret", tier="cloud", action="expire", after="1d")]
    inventory = ListInventory({"cloud": [obj("a", 2, refs=frozenset({0}), etag="e1"), obj("b", 3)]})
    first = plan(rules, inventory, NOW, tiers=["cloud"], references=REFS)
    second = plan(rules, inventory, NOW, tiers=["cloud"], references=REFS)
    assert first.as_json() == second.as_json()
    again = Plan.from_json(first.as_json())
    assert again.as_json() == first.as_json()
    assert again.actions[0].etag in ("e1", None)
    assert first.totals() == {"expire": {"objects": 2, "bytes": 200}}


WATERMARK = [
    {"id": "wm", "tier": "local", "action": "migrate", "to": "cloud", "when": "over-watermark"}
]


@pytest.mark.parametrize(
    ("order", "used", "expected"),
    [
        ("oldest", 850, ["a", "b"]),  # 850 > 800: move until ≤ 700
        ("oldest", 800, []),  # at the high mark: nothing
        ("largest", 850, ["c"]),
        ("least-recently-used", 850, ["b", "a"]),
    ],
)
def test_watermark_moves_coldest_until_low_mark(order: str, used: int, expected: list[str]) -> None:
    objects = [
        obj("a", 10, 100, accessed=NOW - DAY),
        obj("b", 9, 100, accessed=NOW - 2 * DAY),
        obj("c", 1, 300),
    ]
    state = TierState("local", used=used, capacity=1000, high=0.8, low=0.7, objects=3)
    inventory = ListInventory({"local": objects, "cloud": []}, {"local": state})
    rules = [rule(**WATERMARK[0], order=order)]
    result = plan(rules, inventory, NOW, tiers=["local", "cloud"])
    assert [a.key for a in result.actions] == expected
    assert all(a.to == "cloud" for a in result.actions)


def test_watermark_skips_pinned_and_keeps_going() -> None:
    objects = [obj("a", 10, 100, pinned=True), obj("b", 9, 100), obj("c", 8, 100)]
    state = TierState("local", used=850, capacity=1000, objects=3)
    inventory = ListInventory({"local": objects}, {"local": state})
    result = plan([rule(**WATERMARK[0])], inventory, NOW, tiers=["local", "cloud"])
    assert [a.key for a in result.actions] == ["b", "c"]
    assert skipped(result) == [("wm", "a", "pinned")]


def test_expiry_earlier_in_the_file_frees_room_for_the_watermark() -> None:
    objects = [obj("old", 100, 200), obj("b", 9, 100), obj("c", 8, 100)]
    state = TierState("local", used=850, capacity=1000, objects=3)
    inventory = ListInventory({"local": objects}, {"local": state})
    rules = [rule(id="ret", tier="local", action="expire", after="90d"), rule(**WATERMARK[0])]
    result = plan(rules, inventory, NOW, tiers=["local", "cloud"])
    assert planned(result) == [("expire", "ret", "local", "old")]  # 650 left: under 800


def test_max_fraction_refuses_the_rule_on_that_tier() -> None:
    inventory = ListInventory(
        {"local": [obj("a", 5), obj("b", 5), obj("c", 5, refs=frozenset({0}))]}
    )
    rules = [rule(id="gc", tier="local", action="collect-orphans", grace="1d", max_fraction=0.5)]
    result = plan(rules, inventory, NOW, tiers=["local"])
    assert result.actions == []
    assert [(r.rule, r.tier) for r in result.refusals] == [("gc", "local")]
    assert "2 of 3" in result.refusals[0].reason


def test_versioned_tier_gets_a_note_when_the_plan_deletes() -> None:
    state = TierState("cloud", used=100, objects=1, versioned=True)
    inventory = ListInventory({"cloud": [obj("a", 5)]}, {"cloud": state})
    result = plan(
        [rule(id="ret", tier="cloud", action="expire", after="1d")],
        inventory,
        NOW,
        tiers=["cloud"],
    )
    assert len(result.actions) == 1
    assert any("delete marker" in note for note in result.notes)


def test_planner_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening files or sockets during planning would fail here."""
    import builtins
    import socket

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the planner did I/O")

    rules = [rule(id="ret", tier="cloud", action="expire", after="1d")]
    inventory = ListInventory({"cloud": [obj("a", 5)]})
    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    result = plan(rules, inventory, NOW, tiers=["cloud"])
    assert planned(result) == [("expire", "ret", "cloud", "a")]


def test_quarantine_frees_nothing_for_the_watermark() -> None:
    objects = [obj("orphan", 100, 200), obj("b", 9, 100), obj("c", 8, 100)]
    state = TierState("local", used=850, capacity=1000, objects=3)
    inventory = ListInventory({"local": objects}, {"local": state})
    rules = [
        rule(
            id="gc",
            tier="local",
            action="collect-orphans",
            grace="1d",
            mode="quarantine",
            max_fraction=1,
            filter={"prefix": "orphan"},
        ),
        rule(**WATERMARK[0]),
    ]
    result = plan(rules, inventory, NOW, tiers=["local", "cloud"])
    assert planned(result) == [
        ("quarantine", "gc", "local", "orphan"),
        ("migrate", "wm", "local", "b"),
        ("migrate", "wm", "local", "c"),
    ]


def test_only_tiers_the_rules_act_on_are_asked_whether_they_keep_versions(
    tmp_path: Any,
) -> None:
    """Asking costs an S3 client and a request: planning asks it of the tiers a rule acts
    on (the only ones a plan deletes from), never of a destination or an idle tier."""
    from shelflife import Shelf
    from shelflife.config import parse_config
    from shelflife.engine.planning import tier_states

    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "tiers": {
            name: {"url": f"file://{tmp_path / name}", "create": True}
            for name in ("hot", "cold", "idle")
        },
        "rules": [{"id": "m", "tier": "hot", "action": "migrate", "to": "cold", "after": "1d"}],
    }
    config = parse_config(raw, base_dir=tmp_path, source="t", env={})
    with Shelf.open(config) as shelf:
        asked: list[str] = []

        def versioned(tier: str) -> bool:
            asked.append(tier)
            return True

        shelf.context.versioned = versioned
        states = tier_states(shelf.context, config.rules)
    assert asked == ["hot"]
    assert states["hot"].versioned
    assert not states["cold"].versioned
    assert not states["idle"].versioned
