"""What the references name, as streams in key order: the input of marking by merge.

An inventory read in key order and the keys the reference sources name, read in the same
(byte) order, are compared like ``comm`` does, with no copy of the references anywhere:
see :func:`merge_pages`. Which object counts as named is the rule of the snapshot's anti-join
(:mod:`shelflife.catalog.ledger`): a reference names (tier T, key K) directly, or names K
on another tier T' whose inventory lacks K (a value there would be followed to T).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from operator import lt
from typing import Generic, Protocol, TypeVar

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


# Per key of a page, the sources naming it on the merged tier, and the (other tier,
# source) pairs naming it elsewhere: only keys of the page appear.
Names = dict[str, set[int]]
Elsewhere = dict[str, list[tuple[str, int]]]

Item = TypeVar("Item", Named, NamedElsewhere)


class _Window(Generic[Item]):
    """A stream in key order, taken a key range at a time."""

    __slots__ = ("_head", "_stream")

    def __init__(self, stream: Iterator[Item]) -> None:
        self._stream: Iterator[Item] = stream
        self._head: Item | None = next(stream, None)

    def upto(self, last: str, wanted: set[str]) -> list[Item]:
        """The items not taken yet whose key is at most ``last``, less those whose key
        is not in ``wanted`` (passed over, never held: a page's range may hold many
        names of keys the page lacks)."""
        head = self._head
        if head is None or head[0] > last:
            return []
        taken = [head] if head[0] in wanted else []
        stream = self._stream
        for head in stream:
            if head[0] > last:
                self._head = head
                return taken
            if head[0] in wanted:
                taken.append(head)
        self._head = None
        return taken


def _check_order(keys: list[str], last: str | None) -> None:
    """Raise :class:`KeyOrderError` unless ``keys`` strictly increase from after ``last``."""
    if last is not None and keys[0] <= last:
        raise KeyOrderError(f"{keys[0]!r} came after {last!r}")
    if all(map(lt, keys, islice(keys, 1, None))):
        return
    for before, key in zip(keys, islice(keys, 1, None), strict=False):
        if key <= before:
            raise KeyOrderError(f"{key!r} came after {before!r}")


def merge_pages(
    pages: Iterable[Sequence[Row]], tier: str, naming: Naming
) -> Iterator[tuple[Sequence[Row], Names, Elsewhere]]:
    """Each page of rows (sequences whose first item is the key, in strictly increasing
    key order across pages), with what the references name among its keys: the sources
    that name a key on ``tier`` and the (other tier, source) pairs that name it
    elsewhere. The caller decides whether a key named elsewhere counts (it does where
    that tier's inventory lacks the key).

    A page costs one ordered comparison of its keys and one pass over the names that
    fall in its range, so an unreferenced key is told by a dictionary lookup. Memory is
    a page and what names its keys: names of keys the page lacks are passed over."""
    direct = _Window(naming.named(tier))
    others = _Window(naming.elsewhere(tier))
    loose = naming.loose
    last: str | None = None
    for page in pages:
        if not page:
            continue
        keys: list[str] = [row[0] for row in page]  # type: ignore[index]
        _check_order(keys, last)
        last = keys[-1]
        wanted = set(keys)
        named: Names = {}
        for key, source in direct.upto(last, wanted):
            found = named.get(key)
            if found is None:
                named[key] = {source}
            else:
                found.add(source)
        elsewhere: Elsewhere = {}
        for key, other, source in others.upto(last, wanted):
            elsewhere.setdefault(key, []).append((other, source))
        if loose:
            for key in keys:
                for other, source in loose.get(key, ()):
                    if other == tier:
                        named.setdefault(key, set()).add(source)
                    else:
                        elsewhere.setdefault(key, []).append((other, source))
        yield page, named, elsewhere


__all__ = [
    "Elsewhere",
    "KeyOrderError",
    "Named",
    "NamedElsewhere",
    "Names",
    "Naming",
    "merge_pages",
]
