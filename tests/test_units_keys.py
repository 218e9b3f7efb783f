"""Parsing of sizes, ratios, durations and instants; validation of keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shelflife.base.keys import join_key, validate_key
from shelflife.base.units import format_size, parse_duration, parse_instant, parse_ratio, parse_size
from shelflife.errors import InvalidKeyError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0B", 0),
        ("140GB", 140 * 10**9),
        ("1.5MB", 1_500_000),
        ("5MiB", 5 * 2**20),
        ("2 TiB", 2 * 2**40),
        ("1kb", 1000),
        (512, 512),
        ("300", 300),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-5GB", "5 XB", "", "GB", -1, True])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message checked elsewhere
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"), [("80%", 0.8), ("0%", 0.0), ("100%", 1.0), (0.25, 0.25), ("0.7", 0.7)]
)
def test_parse_ratio(text: str | float, expected: float) -> None:
    assert parse_ratio(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["101%", "-1%", 1.5, "half", True])
def test_parse_ratio_rejects(text: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_ratio(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("1h", timedelta(hours=1)),
        ("90s", timedelta(seconds=90)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("45", timedelta(seconds=45)),
        ("15m", timedelta(minutes=15)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "30 days", "d", "1y", "", "3d junk"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_instant_is_aware_utc() -> None:
    assert parse_instant("2026-03-01T00:00:00Z") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_instant("2026-03-01T01:00:00+01:00") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_instant("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("next tuesday")


def test_format_size() -> None:
    assert format_size(999) == "999 B"
    assert format_size(1_500_000) == "1.5 MB"
    assert format_size(140 * 10**9) == "140.0 GB"


HOSTILE = {
    "../etc/passwd": "..",
    "a/../../b": "..",
    "/etc/passwd": "starts with '/'",
    "a//b": "empty segment",
    "./a": "contains .",
    "dir/": "ends with '/'",
    "a\\..\\b": "backslash",
    "nul\x00": "control character",
    "line\nbreak": "control character",
    "esc\x1b[31m": "control character",
    "c1\x85": "control character",
    "": "empty",
    "é" * 513: "1026 bytes",
}


@pytest.mark.invariant("I7")
@pytest.mark.parametrize(("key", "reason"), list(HOSTILE.items()))
def test_hostile_keys_are_rejected_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        validate_key(key)
    assert reason in caught.value.message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "key", ["a", "a/b/c.mp4", "ä/🎬 film.mp4", "..hidden", "a..b", ".dotfile", "x" * 1024, "a b"]
)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


def test_join_key() -> None:
    assert join_key("", "a") == "a"
    assert join_key("pre/", "a/b") == "pre/a/b"
