"""How rows spell locations: parsing a column value into (tier, key) and back.

Each tier has a ``ref_format`` (``data/storage/outputs/{key}``, ``s3://bucket/out/{key}``)
and optional ``ref_aliases`` (other spellings of the same place, e.g. a container path).
A value is parsed against every template; values are always written in ``ref_format``.
A tier whose template is the bare ``{key}`` matches any value, so it is tried last and
only when no other tier's template matched.
"""

from __future__ import annotations

from dataclasses import dataclass

from shelflife.config.model import Config
from shelflife.errors import InvalidKeyError
from shelflife.keys import validate_key


@dataclass(frozen=True, slots=True)
class Location:
    tier: str
    key: str


class Locator:
    """Parses reference values into locations and renders locations as values."""

    def __init__(self, config: Config) -> None:
        self._formats = {name: tier.ref_format for name, tier in config.tiers.items()}
        # (head, tail, minimum length, tier) for every spelling with literal text.
        specific: list[tuple[str, str, int, str]] = []
        self._bare: list[str] = []
        for name, tier in config.tiers.items():
            for template in (tier.ref_format, *tier.ref_aliases):
                head, _, tail = template.partition("{key}")
                if head or tail:
                    specific.append((head, tail, len(head) + len(tail), name))
                elif name not in self._bare:
                    self._bare.append(name)
        # Longest literal first, so 'data/storage/outputs/archive/{key}' wins over
        # 'data/storage/outputs/{key}' for values under the archive folder.
        self._templates = sorted(specific, key=lambda t: t[2], reverse=True)

    def parse(self, value: str) -> Location | None:
        """The location a value names, or None when it matches no tier's spelling."""
        found = self.parse_specific(value)
        if found is not None:
            return found
        if len(self._bare) == 1:
            try:
                return Location(self._bare[0], validate_key(value))
            except InvalidKeyError:
                return None
        return None

    def parse_specific(self, value: str) -> Location | None:
        """Like :meth:`parse`, but only through a tier's own spelling (never a bare key)."""
        for head, tail, literal, tier in self._templates:
            if len(value) > literal and value.startswith(head) and value.endswith(tail):
                key = value[len(head) : len(value) - len(tail)]
                try:
                    return Location(tier, validate_key(key))
                except InvalidKeyError:
                    continue
        return None

    def candidates(self, value: str) -> list[Location]:
        """Every location a value could name (for bare keys: one per tier)."""
        found = self.parse(value)
        if found is not None and found.tier not in self._bare:
            return [found]
        validate_key(value)
        return [Location(tier, value) for tier in self._formats]

    def render(self, location: Location) -> str:
        """The value a row stores for this location (the tier's ``ref_format``)."""
        return self._formats[location.tier].replace("{key}", location.key)

    @property
    def bare_tiers(self) -> list[str]:
        return list(self._bare)
