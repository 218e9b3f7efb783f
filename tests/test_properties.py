"""Properties that hold for every input (hypothesis): keys, sizes, durations, config, plans.

Each test counts the examples hypothesis tried and records them in the reliability
figures; a failing example is shrunk to the smallest input that breaks the property.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelflife.base.keys import validate_key
from shelflife.base.units import parse_duration, parse_ratio, parse_size
from shelflife.config import parse_config
from shelflife.config.model import ReferenceConfig, RuleConfig
from shelflife.engine.planner import plan
from shelflife.errors import ConfigError, InvalidKeyError
from shelflife.model.actions import DELETING
from shelflife.model.selection import ObjectView, TierState
from tests.support.figures import Figures
from tests.support.planning import ListInventory

EXAMPLES = int(os.environ.get("SHELFLIFE_HYPOTHESIS_EXAMPLES", "300"))
QUICK = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12
)
KEYISH = st.one_of(
    st.text(min_size=0, max_size=40),
    st.lists(st.sampled_from(["a", "b.txt", "..", ".", "", "é", "x y", "%2e", "\\", "\x00"]),
             min_size=1, max_size=6).map("/".join),
    st.lists(SEGMENT, min_size=1, max_size=5).map("/".join),
)  # fmt: skip


def test_a_key_is_valid_exactly_when_it_stays_inside_its_root(
    tmp_path: Path, figures: Figures
) -> None:
    """Any string: validate_key returns it unchanged or raises InvalidKeyError, and an
    accepted key names a path under the tier's root, never above or beside it."""
    root = tmp_path / "root"
    tried = [0, 0]

    @QUICK
    @given(KEYISH)
    def prop(key: str) -> None:
        tried[0] += 1
        try:
            accepted = validate_key(key)
        except InvalidKeyError as exc:
            refused = exc
        else:
            refused = None
        if refused is not None:
            assert refused.exit_code == 2
            assert refused.message
            return
        assert accepted == key
        tried[1] += 1
        resolved = os.path.normpath(os.path.join(root, key))
        assert resolved.startswith(str(root) + os.sep), key
        assert "\x00" not in key
        assert not key.startswith("/")
        assert ".." not in key.split("/")

    prop()
    figures.add("property: keys", examples=tried[0], accepted=tried[1])


def test_sizes_ratios_and_durations_parse_or_refuse(figures: Figures) -> None:
    """Any text: a size is an int >= 0, a ratio in [0, 1], a duration >= 0 — or a
    ValueError with a message; never another exception. Written forms read back."""
    tried = [0]

    @QUICK
    @given(
        st.one_of(
            st.text(max_size=30),
            st.from_regex(r"\s*[0-9]{1,400}(\.[0-9]{1,5})?\s*[kKmMgGtT]?i?[bB]?", fullmatch=True),
            st.from_regex(r"([0-9]{1,30}[smhdwSMHDW]){1,4}", fullmatch=True),
            st.from_regex(r"-?[0-9]{1,5}(\.[0-9]+)?%?|nan%?|inf%?", fullmatch=True),
        )
    )  # fmt: skip
    def prop(text: str) -> None:
        tried[0] += 1
        for parse, ok in (
            (parse_size, lambda v: isinstance(v, int) and v >= 0),
            (parse_ratio, lambda v: 0.0 <= v <= 1.0),
            (parse_duration, lambda v: isinstance(v, timedelta) and v >= timedelta(0)),
        ):
            try:
                value = parse(text)  # type: ignore[operator]
            except ValueError as exc:
                message = str(exc)
            else:
                assert ok(value), (parse.__name__, text, value)
                continue
            assert message

    prop()

    @QUICK
    @given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["B", "KiB", "MB", "GB"]))
    def round_trip(number: int, unit: str) -> None:
        tried[0] += 1
        factor = {"B": 1, "KiB": 1024, "MB": 10**6, "GB": 10**9}[unit]
        assert parse_size(f"{number}{unit}") == number * factor
        assert parse_duration(f"{number % 10**6}s") == timedelta(seconds=number % 10**6)

    round_trip()
    figures.add("property: sizes, ratios, durations", examples=tried[0])


# -- configuration ---------------------------------------------------------------------------

SCALARS = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(10**6), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
# Per field, values that are valid and values that are not, so that generated files are
# accepted often enough for the accepted side of the property to be exercised too.
TIER_VALUES: dict[str, list[Any]] = {
    "url": ["file:///srv/a", "s3://bucket/p", "az://c/p", "memory://m", "ftp://x", "", 3],
    "ref_format": ["{key}", "/data/{key}", "no placeholder", "{key}{key}"],
    "capacity": ["5GB", "disk", 10**9, "lots", -1, 1.5],
    "high_watermark": ["80%", 0.9, "180%", "high"],
    "low_watermark": ["70%", 0.5, 0.95, -0.1],
    "presign_ttl": ["1h", "7d", "8d", "0s", "soon", 60],
    "retries": [0, 3, 20, 21, -1, "3"],
    "multipart_threshold": ["8MiB", "1GB", "8XB", 2.5],
    "storage_class": ["STANDARD_IA", "Cool", "NEARLINE", "cheap"],
    "bogus": ["x"],
}
RULE_VALUES: dict[str, list[Any]] = {
    "id": ["r1", "r2", ""],
    "tier": ["local", "cloud", "*", "nowhere"],
    "action": ["migrate", "expire", "collect-orphans", "explode"],
    "to": ["cloud", "local", "nowhere"],
    "when": ["over-watermark", "sometimes"],
    "after": ["30d", "0s", "later"],
    "grace": ["7d", "-1d"],
    "mode": ["delete", "quarantine", "shred"],
    "max_fraction": ["25%", 0.5, 2],
    "order": ["oldest", "largest", "random"],
    "batch_size": [1, 1000, 0],
}


def _table(values: dict[str, list[Any]], required: dict[str, Any]) -> st.SearchStrategy[Any]:
    optional = st.dictionaries(
        st.sampled_from(sorted(values)),
        st.one_of(st.sampled_from([v for options in values.values() for v in options]), SCALARS),
        max_size=2,
    )
    fields = st.fixed_dictionaries(
        {name: st.sampled_from(values[name]) for name in required},
        optional={
            name: st.sampled_from(options)
            for name, options in values.items()
            if name not in required
        },
    )
    return st.builds(lambda a, b: {**a, **b}, fields, st.one_of(st.just({}), optional))


SECRET = "hunter2-Sup3rS3cret"
CONFIGS = st.fixed_dictionaries(
    {"tiers": st.dictionaries(st.sampled_from(["local", "cloud"]),
                              _table(TIER_VALUES, {"url": None}), min_size=1, max_size=2)},
    optional={
        "rules": st.lists(_table(RULE_VALUES, {"id": None, "tier": None, "action": None}),
                          max_size=3),
        "executor": st.dictionaries(
            st.sampled_from(["concurrency", "batch_size", "max_error_fraction", "backend"]),
            st.one_of(st.sampled_from([4, 500, "10%", "local", "celery", 0]), SCALARS),
            max_size=2),
        "schedule": st.dictionaries(
            st.sampled_from(["lifecycle", "stats", "timezone"]),
            st.sampled_from(["0 3 * * *", "", "61 * * * *", "UTC", "Mars/Olympus"]),
            max_size=2),
    },
)  # fmt: skip


def test_any_configuration_loads_or_names_its_error(tmp_path: Path, figures: Figures) -> None:
    """Any table of plausible and implausible fields: a Config, or a ConfigError naming a
    field path and a reason — never another exception, never a secret in the message."""
    tried = {"examples": 0, "accepted": 0, "refused": 0}

    @QUICK
    @given(CONFIGS, st.booleans())
    def prop(raw: dict[str, Any], with_secret: bool) -> None:
        tried["examples"] += 1
        if with_secret and raw["tiers"]:
            first = next(iter(raw["tiers"].values()))
            first["secret_key"] = SECRET
        text = tomli_w.dumps(raw)
        try:
            config = parse_config(tomllib.loads(text), base_dir=tmp_path, source="t", env={})
        except ConfigError as exc:
            refused: ConfigError | None = exc
        else:
            refused = None
        if refused is not None:
            tried["refused"] += 1
            assert refused.exit_code == 2
            assert refused.message
            assert SECRET not in str(refused)
            assert SECRET not in (refused.hint or "")
            return
        tried["accepted"] += 1
        assert config.tiers
        for rule in config.rules:
            assert rule.tier == "*" or rule.tier in config.tiers
            assert rule.to is None or (rule.to in config.tiers and rule.to != rule.tier)

    prop()
    assert tried["accepted"] > 0, "no generated configuration was valid: the strategy is off"
    assert tried["refused"] > 0
    figures.add("property: configuration", **tried)


# -- the planner -----------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, tzinfo=UTC)
REFS = (
    ReferenceConfig(database="app", table="jobs", column="path", on_expire="null"),
    ReferenceConfig(database="app", table="uploads", column="path", on_expire="block"),
)
TIERS = ["local", "cloud", "cold"]
KEYS = st.text(alphabet=string.ascii_lowercase + "/._-", min_size=1, max_size=8).filter(
    lambda k: k == k.strip("/") and "//" not in k and ".." not in k
)

OBJECTS = st.builds(
    ObjectView,
    key=KEYS,
    size=st.integers(min_value=0, max_value=10**9),
    modified=st.integers(min_value=0, max_value=400 * 86400).map(
        lambda s: NOW - timedelta(seconds=s)
    ),
    pinned=st.booleans(),
    leased=st.booleans(),
    refs=st.frozensets(st.sampled_from([0, 1]), max_size=2),
    # left unknown (the modification instant stands for them), as before
    accessed=st.none(),
    etag=st.none(),
    created=st.none(),
    arrived=st.none(),
    tags=st.none(),
)
RULES = st.lists(
    st.one_of(
        st.builds(
            lambda tier, to, after: {"tier": tier, "action": "migrate", "to": to, **after},
            st.sampled_from(TIERS),
            st.sampled_from(TIERS),
            st.sampled_from([{"when": "over-watermark"}, {"after": "30d"}, {"after": "0s"}]),
        ),
        st.builds(
            lambda tier, after: {"tier": tier, "action": "expire", "after": after},
            st.sampled_from([*TIERS, "*"]),
            st.sampled_from(["0s", "1d", "90d"]),
        ),
        st.builds(
            lambda tier, grace, mode, fraction: {
                "tier": tier, "action": "collect-orphans", "grace": grace, "mode": mode,
                "max_fraction": fraction},
            st.sampled_from([*TIERS, "*"]),
            st.sampled_from(["0s", "7d"]),
            st.sampled_from(["delete", "quarantine"]),
            st.sampled_from([0.1, 1.0]),
        ),
    ),
    max_size=4,
)  # fmt: skip


def test_no_plan_deletes_what_it_must_not(figures: Figures) -> None:
    """Any inventory, references and rules: no plan deletes a referenced object, expires
    one a 'block' source names, touches a pinned or leased one, acts twice on one
    object, or migrates to the tier an object is on."""
    tried = {"examples": 0, "actions": 0}

    @QUICK
    @given(
        st.dictionaries(st.sampled_from(TIERS), st.lists(OBJECTS, max_size=25), max_size=3),
        RULES,
        st.integers(min_value=0, max_value=2 * 10**10),
    )
    def prop(held: dict[str, list[ObjectView]], raw_rules: list[dict[str, Any]], cap: int) -> None:
        tried["examples"] += 1
        unique = {t: list({o.key: o for o in objs}.values()) for t, objs in held.items()}
        rules = []
        for position, fields in enumerate(raw_rules):
            if fields.get("to") == fields["tier"]:
                continue  # the config refuses it (tested above); the planner never sees it
            rules.append(RuleConfig.model_validate({"id": f"r{position}", **fields}))
        states = {
            t: TierState(t, used=sum(o.size for o in objs), capacity=cap or None)
            for t, objs in unique.items()
        }
        result = plan(rules, ListInventory(unique, states), NOW, tiers=TIERS, references=REFS)
        by_key = {(t, o.key): o for t, objs in unique.items() for o in objs}
        seen: set[tuple[str, str]] = set()
        for action in result.actions:
            tried["actions"] += 1
            target = (action.tier, action.key)
            assert target not in seen, f"{target} acted on twice"
            seen.add(target)
            obj = by_key[target]
            assert not obj.pinned, action
            assert not obj.leased, action
            if action.action in DELETING and action.action != "expire":
                assert not obj.refs, f"{action.action} of a referenced object: {action}"
            if action.action == "expire":
                assert 1 not in obj.refs, f"expired an object a 'block' source names: {action}"
            if action.action == "migrate":
                assert action.to is not None
                assert action.to != action.tier

    prop()
    figures.add("property: planner", **tried)


def test_the_reliability_report_names_a_test_for_every_invariant() -> None:
    """docs/reliability.md (written from a full run) lists, for each DESIGN section 4
    invariant, at least one test, and every test it lists exists."""
    root = Path(__file__).resolve().parent.parent
    report = (root / "docs" / "reliability.md").read_text()
    sources = {p.name: p.read_text() for p in (root / "tests").glob("test_*.py")}
    for name in ("I1", "I2", "I3", "I4", "I5", "I6", "I7"):
        rows = [line for line in report.splitlines() if line.startswith(f"| **{name}**")]
        assert rows, f"{name} has no row in docs/reliability.md"
        assert "(none)" not in rows[0], f"no test proves {name}"
    listed = re.findall(r"`(test_\w+\.py)::(test_\w+)`", report)
    assert listed
    for module, function in listed:
        assert f"def {function}(" in sources.get(module, ""), f"{module}::{function} is gone"
