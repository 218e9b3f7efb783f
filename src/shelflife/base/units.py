"""Parsing of sizes, ratios and durations: done once, when configuration is read.

Sizes use SI units for ``KB``/``MB``/``GB``/``TB`` (powers of 1000, as disks are sold)
and IEC units for ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024). Durations accept
``s``, ``m``, ``h``, ``d`` and ``w``, alone or combined (``1d12h``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "PB": 1000**5,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
    "T": 1024**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
    "PIB": 1024**5,
}
MAX_SIZE = 2**63 - 1  # bytes: what a signed 64-bit column in the catalog holds
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(value: str | int) -> int:
    """Return a size in bytes: ``"140GB"`` → 140_000_000_000, ``"5MiB"`` → 5_242_880."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string such as '140GB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        if value > MAX_SIZE:
            raise ValueError(f"{value} bytes is larger than any store (at most 8 EiB)")
        return value
    if not isinstance(value, str):
        raise ValueError(
            f"a size must be a whole number of bytes or a string such as '140GB', not {value!r}"
        )
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. '140GB', '512MiB' or '0B'")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.upper())
    if factor is None:
        raise ValueError(
            f"unknown size unit {unit!r} in {value!r}; use B, KB, MB, GB, TB or KiB…TiB"
        )
    size = int(Decimal(number) * factor)
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is larger than any store (at most 8 EiB)")
    return size


def parse_ratio(value: str | float | int) -> float:
    """Return a fraction in [0, 1]: ``"80%"`` → 0.8, ``0.8`` → 0.8."""
    if isinstance(value, bool):
        raise ValueError("a ratio must be a percentage such as '80%' or a fraction such as 0.8")
    if isinstance(value, str):
        text = value.strip()
        try:
            ratio = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage; write e.g. '80%' or 0.8") from None
    else:
        ratio = float(value)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{value!r} is outside 0%..100%")
    return ratio


def parse_duration(value: str | int | timedelta) -> timedelta:
    """Return a duration: ``"30d"``, ``"1h"``, ``"1d12h"``; a bare number means seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration must be a string such as '30d' or '1h'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(value, value)
    if isinstance(value, float) and value >= 0:
        return _bounded(value, value)
    if not isinstance(value, str):
        raise ValueError(f"a duration must be a string such as '30d' or '1h', not {value!r}")
    text = value.strip()
    if text.isdigit():
        return _bounded(value, int(text))
    parts = _DURATION_PART_RE.findall(text)
    if not parts or _DURATION_PART_RE.sub("", text).strip():
        raise ValueError(f"{value!r} is not a duration; write e.g. '30d', '12h', '1d12h' or '90s'")
    seconds = sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)
    return _bounded(value, seconds)


def _bounded(value: object, seconds: float) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{value!r} is longer than any duration shelflife can count") from None


def parse_instant(value: str) -> datetime:
    """Parse an ISO 8601 instant; a naive one is taken as UTC. Returns an aware UTC datetime."""
    try:
        instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO 8601 time; write e.g. 2026-03-01T00:00:00Z"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def parse_instant_or_ago(value: str, now: datetime) -> datetime:
    """An instant given as ISO 8601, or as a duration before ``now`` (``"7d"``: seven days
    ago), for ``--since`` and ``--until``; ValueError, saying both forms, otherwise."""
    text = value.strip()
    if text and not text.isdigit() and not _DURATION_PART_RE.sub("", text).strip():
        try:
            return now - parse_duration(text)
        except (ValueError, OverflowError):
            pass
    try:
        return parse_instant(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration nor an ISO 8601 time; write e.g. '7d', "
            "'12h' or 2026-03-01T00:00:00Z"
        ) from None


def format_size(size: int | float) -> str:
    """Render a byte count for humans with SI units: 1_500_000 → '1.5 MB'."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_money(value: float) -> str:
    """Render an amount in price units for humans: ``1,234.57``, small ones to 4 places."""
    if value and abs(value) < 0.01:
        return f"{value:.4f}"
    return f"{value:,.2f}"


def utcnow() -> datetime:
    """The current instant, aware, in UTC. Read only at the edges and passed down."""
    return datetime.now(UTC)


FUTURE_SLACK = timedelta(seconds=5)


def evaluation_instant(at: datetime | None, *, dry_run: bool, what: str) -> datetime:
    """The instant a run evaluates ages at: now, or ``--at``.

    A future ``--at`` is for dry runs only: acting on ages as they will be next month would
    touch objects still inside their grace or retention today.
    """
    from shelflife.errors import UsageError

    now = utcnow()
    if at is None:
        return now
    if at > now + FUTURE_SLACK and not dry_run:
        raise UsageError(
            "--at in the future evaluates ages as they will be then; it is for dry runs only",
            hint=f"add --dry-run to see what {what} at that time",
        )
    return at


def format_age(age: timedelta) -> str:
    """A duration as people say it: ``3 days``, ``5 hours``, ``12 minutes``."""
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
