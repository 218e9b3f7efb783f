"""What the references name, as streams in key order: the input of marking by merge.

An inventory read in key order and the keys the reference sources name, read in the same
(byte) order, are compared like ``comm`` does, with no copy of the references anywhere:
see :func:`merge`. Which object counts as named is the rule of the snapshot's anti-join
(:mod:`shelflife.catalog.ledger`): a reference names (tier T, key K) directly, or names K
on another tier T' whose inventory lacks K (a value there would be followed to T).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, TypeVar

# A key some source names on one tier, with that source's position under [[references]]
# (-1 for one that is not declared there).
Named = tuple[str, int]
# A key named on another tier: (key, that tier, source).
NamedElsewhere = tuple[str, str, int]

Row = TypeVar("Row")


class Naming(Protocol):
    """The keys the reference sources name, per tier, in byte order."""

    def named(self, tier: str) -> Iterator[Named]:
        """The keys named on ``tier``, in byte order (a key once per row naming it)."""
        ...

    def elsewhere(self, tier: str) -> Iterator[NamedElsewhere]:
        """The keys named on every other tier, in byte order."""
        ...

    @property
    def loose(self) -> Mapping[str, Sequence[tuple[str, int]]]:
        """Per key, the (tier, source) pairs of references read otherwise (spellings
        whose values do not sort as their keys): few, held in memory."""
        ...


class KeyOrderError(Exception):
    """A stream that had to be in byte order was not."""


def merge(
    rows: Iterable[Row], tier: str, naming: Naming
) -> Iterator[tuple[Row, set[int] | None, list[tuple[str, int]] | None]]:
    """Each row (a sequence whose first item is its key, in strictly increasing key
    order) with the sources
    that name its key on ``tier`` and the (other tier, source) pairs that name its key
    elsewhere; None for none. The caller decides whether a key named elsewhere counts
    (it does where that tier's inventory lacks the key)."""
    direct = naming.named(tier)
    others = naming.elsewhere(tier)
    loose = naming.loose
    here = next(direct, None)
    there = next(others, None)
    last: str | None = None
    for row in rows:
        key: str = row[0]  # type: ignore[index]
        if last is not None and key <= last:
            raise KeyOrderError(f"{key!r} came after {last!r}")
        last = key
        sources: set[int] | None = None
        while here is not None and here[0] < key:
            here = next(direct, None)
        while here is not None and here[0] == key:
            if sources is None:
                sources = set()
            sources.add(here[1])
            here = next(direct, None)
        elsewhere: list[tuple[str, int]] | None = None
        while there is not None and there[0] < key:
            there = next(others, None)
        while there is not None and there[0] == key:
            if elsewhere is None:
                elsewhere = []
            elsewhere.append((there[1], there[2]))
            there = next(others, None)
        if loose:
            for other_tier, source in loose.get(key, ()):
                if other_tier == tier:
                    if sources is None:
                        sources = set()
                    sources.add(source)
                else:
                    if elsewhere is None:
                        elsewhere = []
                    elsewhere.append((other_tier, source))
        yield row, sources, elsewhere


__all__ = ["KeyOrderError", "Named", "NamedElsewhere", "Naming", "merge"]
