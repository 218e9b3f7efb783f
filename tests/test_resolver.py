"""The one resolver: values as applications store them → (tier, key), and back.

Unit tests and a property test (hypothesis); the database and store behaviour built on
it is tested in test_spellings.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelflife.base.jsonpath import compile_path, replace_strings, strings
from shelflife.base.keys import validate_key
from shelflife.config import parse_config
from shelflife.config.model import Config
from shelflife.errors import ConfigError
from shelflife.model.locations import Location, Locator
from shelflife.references.sources import ReferenceReader
from tests.support.figures import Figures

EXAMPLES = int(os.environ.get("SHELFLIFE_HYPOTHESIS_EXAMPLES", "300"))


def config(tmp_path: Path, **tiers: dict[str, Any]) -> Config:
    raw = {"tiers": tiers or default_tiers(tmp_path)}
    return parse_config(raw, base_dir=tmp_path, source="test", env={})


def default_tiers(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {
        "local": {
            "url": f"file://{tmp_path / 'outputs'}",
            "create": True,
            "ref_format": "https://cdn.example.com/media/{key}",
            "ref_aliases": ["data/storage/outputs/{key}"],
        },
        "cloud": {
            "url": "s3://iq-bucket/archive",
            "ref_format": "s3://iq-bucket/archive/{key}",
        },
    }


@pytest.fixture
def locator(tmp_path: Path) -> Locator:
    return Locator(config(tmp_path))


def test_percent_encoding_query_and_fragment_of_web_urls(locator: Locator) -> None:
    url = "https://cdn.example.com/media/covers/c%200.jpg"
    assert locator.resolve(url)[0] == Location("local", "covers/c 0.jpg")
    signed = url + "?X-Amz-Signature=abc&X-Amz-Expires=3600"
    assert locator.resolve(signed)[0] == Location("local", "covers/c 0.jpg")
    assert locator.resolve(url + "#t=10")[0] == Location("local", "covers/c 0.jpg")
    # '+' is a plus in a URL path, not a space
    assert locator.resolve("https://cdn.example.com/media/a+b.jpg")[0].key == "a+b.jpg"


def test_object_store_uris_prefer_the_literal_key(locator: Locator) -> None:
    # An S3 key may hold '%', '?' or '#': the literal reading comes first, the others follow.
    found = locator.resolve("s3://iq-bucket/archive/100%25 sure?.txt")
    assert found[0] == Location("cloud", "100%25 sure?.txt")
    assert Location("cloud", "100% sure") in found or Location("cloud", "100%25 sure") in found


def test_blank_values_are_null_and_padding_is_read_both_ways(locator: Locator) -> None:
    assert locator.resolve("") == []
    assert locator.resolve("   \n\t") == []
    padded = locator.resolve("  data/storage/outputs/x.bin\n")
    assert Location("local", "x.bin") in padded


def test_a_value_names_every_tier_whose_spelling_it_fits(tmp_path: Path) -> None:
    tiers = {
        "a": {"create": True, "url": f"file://{tmp_path / 'a'}", "ref_format": "{key}"},
        "b": {"create": True, "url": f"file://{tmp_path / 'b'}", "ref_format": "{key}"},
        "nested": {
            "create": True,
            "url": f"file://{tmp_path / 'n'}",
            "ref_format": "files/archive/{key}",
        },
        "outer": {"create": True, "url": f"file://{tmp_path / 'o'}", "ref_format": "files/{key}"},
    }
    locator = Locator(config(tmp_path, **tiers))
    assert locator.resolve("renders/x.mp4") == [
        Location("a", "renders/x.mp4"),
        Location("b", "renders/x.mp4"),
    ]
    # the longest spelling first, the enclosing folder's reading too
    assert locator.resolve("files/archive/x") == [
        Location("nested", "x"),
        Location("outer", "archive/x"),
    ]
    # a URL is never a bare key
    assert locator.resolve("s3a://bucket/x") == []
    assert [text for text, _ in locator.shared_spellings()] == ["{key}"]


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        ("s3a://iq-bucket/archive/x.bin", "cloud"),
        ("S3://iq-bucket/archive/x.bin", "cloud"),
        ("s3n://IQ-BUCKET/archive/x.bin", "cloud"),
        ("https://iq-bucket.s3.amazonaws.com/archive/x.bin", "cloud"),
        ("https://s3.us-east-1.amazonaws.com/iq-bucket/archive/x.bin", "cloud"),
        ("http://127.0.0.1:9000/iq-bucket/archive/x.bin", "cloud"),
        ("HTTPS://cdn.example.com/media/x.bin", "local"),
        ("/srv/app/data/storage/outputs/x.bin", "local"),
        ("DATA/storage/outputs/x.bin", "local"),
    ],
)
def test_near_misses_name_the_tier_and_the_alias_to_add(
    locator: Locator, value: str, tier: str
) -> None:
    assert locator.resolve(value) == []
    assert locator.near_miss(value) == tier
    alias = locator.suggest_alias(value, tier)
    assert alias.endswith("{key}")
    # the suggested alias, added, makes the value resolve to the key it meant
    tiers = default_tiers(Path("/tmp/unused"))
    tiers[tier] = {**tiers[tier], "ref_aliases": [*tiers[tier].get("ref_aliases", []), alias]}
    fixed = Locator(config(Path("/tmp/unused"), **tiers))
    assert Location(tier, "x.bin") in fixed.resolve(value)


def test_unrelated_values_are_no_near_miss(locator: Locator) -> None:
    for value in ["https://youtube.com/watch?v=1", "/etc/shadow", "n/a", "other-bucket/x"]:
        assert locator.near_miss(value) is None


def test_free_text_references_markdown_html_and_prose(locator: Locator) -> None:
    reader = ReferenceReader("text", None, locator)
    body = (
        "Intro ![cover](https://cdn.example.com/media/covers/c%201.jpg) and "
        '<img src="https://cdn.example.com/media/a.png?w=200"> then '
        "see data/storage/outputs/my report.pdf, or s3://iq-bucket/archive/old.bin."
    )
    found = reader.locations(body)
    assert Location("local", "covers/c 1.jpg") in found
    assert Location("local", "a.png") in found
    assert Location("local", "my report.pdf") in found  # a key with a space, in prose
    assert Location("cloud", "old.bin") in found


def test_json_paths_select_the_strings_that_hold_references() -> None:
    document = {"video": "v.mp4", "images": [{"url": "a.jpg"}, {"url": "b.jpg", "alt": "x"}]}
    assert list(strings(document, compile_path("$.video"))) == ["v.mp4"]
    assert list(strings(document, compile_path("$.images[*].url"))) == ["a.jpg", "b.jpg"]
    assert sorted(strings(document, compile_path("$..url"))) == ["a.jpg", "b.jpg"]
    assert list(strings(document, compile_path("$.images[1]['alt']"))) == ["x"]
    assert sorted(strings(document)) == ["a.jpg", "b.jpg", "v.mp4", "x"]
    changed = replace_strings(document, compile_path("$.images[*].url"), str.upper)
    assert changed["images"] == [{"url": "A.JPG"}, {"url": "B.JPG", "alt": "x"}]
    assert changed["video"] == "v.mp4"


@pytest.mark.invariant("I7")
@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"kind": "json", "path": "video"}, "must start with '\\$'"),
        ({"kind": "json", "path": "$.a[?(@.x)]"}, "cannot read"),
        ({"kind": "value", "path": "$.a"}, "applies to kind = 'json' only"),
        ({"kind": "text", "on_expire": "null"}, "would blank a whole text value"),
        ({"kind": "yaml"}, "kind"),
    ],
)
def test_bad_reference_declarations_are_refused(
    tmp_path: Path, reference: dict[str, Any], message: str
) -> None:
    raw = {
        "tiers": default_tiers(tmp_path),
        "databases": {"app": {"url": "sqlite:///app.db"}},
        "references": [{"database": "app", "table": "t", "column": "c", **reference}],
    }
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, base_dir=tmp_path, source="test", env={})


def test_ignore_columns_need_a_reason_and_a_known_database(tmp_path: Path) -> None:
    raw: dict[str, Any] = {
        "tiers": default_tiers(tmp_path),
        "databases": {"app": {"url": "sqlite:///app.db"}},
        "ignore_columns": [{"database": "app", "table": "t", "column": "c"}],
    }
    with pytest.raises(ConfigError, match="reason"):
        parse_config(raw, base_dir=tmp_path, source="test", env={})
    raw["ignore_columns"] = [{"database": "other", "table": "t", "column": "c", "reason": "x"}]
    with pytest.raises(ConfigError, match="unknown database 'other'"):
        parse_config(raw, base_dir=tmp_path, source="test", env={})


# -- the property ------------------------------------------------------------------------------

# Byte-order traps (S3 lists in UTF-8 byte order, collations and directory walks do not),
# URL metacharacters, spaces and non-ASCII.
TRAPS = " %+?#&=;~_-.!'()*@$,Zaz09éßİıǅ日本\u00a0\u2003\uffef\U0001d7d8"
SEGMENT = st.text(alphabet=TRAPS, min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
KEYS = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join).filter(lambda key: _valid(key))


def _valid(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True


def spelled_forms(key: str) -> dict[str, tuple[str, Any, str]]:
    """Every supported way a row may hold ``key`` on each tier: (kind, value, tier)."""
    web = "https://cdn.example.com/media/" + quote(key)
    raw_s3 = "s3://iq-bucket/archive/" + key
    return {
        "web, encoded": ("value", web, "local"),
        "web, raw": ("value", "https://cdn.example.com/media/" + key, "local"),
        "web, signed": ("value", web + "?X-Amz-Signature=0f&X-Amz-Expires=60", "local"),
        "web, fragment": ("value", web + "#t=1", "local"),
        "path alias": ("value", "data/storage/outputs/" + key, "local"),
        "s3, raw": ("value", raw_s3, "cloud"),
        "s3, encoded": ("value", "s3://iq-bucket/archive/" + quote(key), "cloud"),
        "json, ascii": ("json", json.dumps({"a": {"b": [web]}}), "local"),
        "json, utf-8": ("json", json.dumps({"s3": raw_s3}, ensure_ascii=False), "cloud"),
        "array": ("array", ["x", raw_s3, None], "cloud"),
        "html": ("text", f'<p>see <img src="{web}"> here</p>', "local"),
        "markdown": ("text", f"![c]({web}) and more", "local"),
    }


@pytest.mark.invariant("I1", "I3")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=KEYS)
def test_every_spelling_of_a_key_resolves_to_it(
    key: str, tmp_path_factory: pytest.TempPathFactory, figures: Figures
) -> None:
    locator = Locator(config(tmp_path_factory.getbasetemp()))
    for form, (kind, value, tier) in spelled_forms(key).items():
        found = ReferenceReader(kind, None, locator).locations(value)
        assert Location(tier, key) in found, (form, value, found)
        canonical = form in ("web, encoded", "s3, raw", "path alias")
        if kind == "value" and canonical and key == key.strip():
            # the preferred reading (a padded value is read trimmed first, then as given)
            assert locator.resolve(value)[0] == Location(tier, key), form
        # what a rewrite writes resolves to the new location, whatever form it replaced
        moved = ReferenceReader(kind, None, locator).rewrite(
            value, {Location(tier, key): Location("cloud" if tier == "local" else "local", key)}
        )
        assert Location("cloud" if tier == "local" else "local", key) in ReferenceReader(
            kind, None, locator
        ).locations(moved), (form, moved)
    figures.add("properties", examples=1)
