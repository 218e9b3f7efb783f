"""References read in byte order: what marking by merge compares the inventory with.

For ``value`` columns, each source is read once ``ORDER BY`` the column in byte order
(``COLLATE "C"`` on PostgreSQL, ``BINARY`` elsewhere). A value spelled ``head + key`` by a
plain spelling (:attr:`~shelflife.model.locations.Locator.plain_heads`) names its key
without the resolver, and the values of one spelling then come in the order of their
keys: each such run is kept as it arrives (in memory, on disk past a few MiB) and read
back as a stream. Every other value — blank-padded, percent-encoded, a URL with a query,
a spelling of no tier, a bare key — is read by the resolver like any reference and kept
in memory, up to :data:`LOOSE_LIMIT` keys.

Nothing is trusted: a run whose keys go backwards (a collation that is not byte order)
or more loose keys than the limit end the reading with :class:`NotOrdered`, and the
caller takes the general path (the snapshot and its anti-join) instead.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from shelflife.model.locations import Locator
from shelflife.model.naming import Named, NamedElsewhere
from shelflife.references.sources import STREAM_BATCH, ParseReport, ReferenceSource

LOOSE_LIMIT = 100_000  # keys read by the resolver that marking by merge holds in memory
SPOOL_BYTES = 8 * 1024 * 1024  # a run stays in memory up to this size, then goes to disk


class NotOrdered(Exception):
    """The references cannot be compared by merge this time (the reason says why)."""


class _Run:
    """The keys one source names through one plain spelling, in byte order."""

    def __init__(self, tier: str, source: int) -> None:
        self.tier = tier
        self.source = source
        self.count = 0
        self.last = ""
        self._file: IO[str] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (kept open)
            max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline="\n"
        )

    def add(self, keys: list[str]) -> None:
        if keys:
            self._file.write("\n".join(keys))
            self._file.write("\n")
            self.count += len(keys)
            self.last = keys[-1]

    def keys(self) -> Iterator[Named]:
        self._file.flush()
        self._file.seek(0)
        source = self.source
        for line in self._file:
            yield line[:-1], source

    def located(self) -> Iterator[NamedElsewhere]:
        """:meth:`keys` with this run's tier: (key, tier, source)."""
        tier = self.tier
        for key, source in self.keys():
            yield key, tier, source

    def close(self) -> None:
        self._file.close()


class SortedReferences:
    """Every reference of the sources, as :class:`~shelflife.model.naming.Naming`."""

    def __init__(self, runs: list[_Run], loose: dict[str, list[tuple[str, int]]]) -> None:
        self._runs = runs
        self._loose = loose

    def named(self, tier: str) -> Iterator[Named]:
        return _merged([run for run in self._runs if run.tier == tier and run.count])

    def elsewhere(self, tier: str) -> Iterator[NamedElsewhere]:
        streams = [run.located() for run in self._runs if run.tier != tier and run.count]
        if not streams:
            return iter(())
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams)

    @property
    def loose(self) -> Mapping[str, Sequence[tuple[str, int]]]:
        return self._loose

    @property
    def tiers(self) -> set[str]:
        """The tiers some reference names."""
        named = {run.tier for run in self._runs if run.count}
        return named | {tier for pairs in self._loose.values() for tier, _ in pairs}

    def close(self) -> None:
        for run in self._runs:
            run.close()
        self._runs = []


def _merged(runs: list[_Run]) -> Iterator[Named]:
    if not runs:
        return iter(())
    if len(runs) == 1:
        return runs[0].keys()
    return heapq.merge(*(run.keys() for run in runs))


def orderable(sources: Sequence[ReferenceSource]) -> str | None:
    """Why these sources cannot be read in byte order (None: they can)."""
    for source in sources:
        if source.kind != "value":
            return f"{source.label} holds references inside {source.kind} values"
        if source.engine.dialect.name not in ("sqlite", "postgresql", "mysql", "mariadb"):
            return f"{source.label} is in a {source.engine.dialect.name} database"
        if source.postgres_type():
            return f"{source.label} is a {source.postgres_type()} column"
        if not source.collates():
            return f"{source.label} is not a text column (no collation orders it)"
    return None


def read_sorted(
    sources: Sequence[ReferenceSource],
    indexes: Sequence[int | None],
    locator: Locator,
    report: ParseReport,
    advance: Any = None,
) -> SortedReferences:
    """Read every source in byte order into runs (see the module's docstring); count what
    was found into ``report``. Raises :class:`NotOrdered` to send the caller down the
    general path; ``advance(rows)`` is told of progress."""
    heads = locator.plain_heads
    runs: list[_Run] = []
    loose: dict[str, list[tuple[str, int]]] = {}
    loose_count = 0
    try:
        for source, index in zip(sources, indexes, strict=True):
            position = -1 if index is None else index
            counts = source.new_report()
            report.sources.append(counts)
            mine = [_Run(tier, position) for _head, tier in heads]
            runs += mine
            pending: list[list[str]] = [[] for _ in heads]
            plain = locator.plain
            reader = source.reader
            for values in _sorted_values(source):
                for value in values:
                    text = value if isinstance(value, str) else str(value)
                    found = plain(text)
                    if found is not None:
                        pending[found[0]].append(found[1])
                        continue
                    for reference in reader.references(value):
                        counts.note(reference, locator)
                        for location in reference.locations:
                            pairs = loose.setdefault(location.key, [])
                            if (location.tier, position) not in pairs:
                                pairs.append((location.tier, position))
                                loose_count += 1
                    if loose_count > LOOSE_LIMIT:
                        raise NotOrdered(
                            f"more than {LOOSE_LIMIT} references of {source.label} are spelled "
                            "in ways whose values do not sort as their keys"
                        )
                counts.rows += len(values)
                for keys, run in zip(pending, mine, strict=True):
                    if keys:
                        _check_order(run, keys, source)
                        run.add(keys)
                        counts.matched += len(keys)
                        counts.counted += len(keys)
                        counts.tiers.add(run.tier)
                        keys.clear()
                if advance is not None:
                    advance(len(values))
    except BaseException:
        for run in runs:
            run.close()
        raise
    return SortedReferences(runs, loose)


def _check_order(run: _Run, keys: list[str], source: ReferenceSource) -> None:
    previous = run.last
    for key in keys:
        if key < previous:
            raise NotOrdered(
                f"{source.label} did not return its values in byte order ({key!r} after "
                f"{previous!r})"
            )
        previous = key


def _sorted_values(source: ReferenceSource) -> Iterator[list[Any]]:
    """Every non-null value of ``source``, in byte order of the values."""
    dialect = source.engine.dialect.name
    column = source.column
    order: Any
    if dialect == "postgresql":
        order = column.collate("C")
    elif dialect == "sqlite":
        order = column.collate("BINARY")
    else:
        order = func.binary(column)
    query = select(column).where(source.where_clause()).order_by(order)
    try:
        with source.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(
                query
            )
            for rows in result.partitions(STREAM_BATCH):
                yield [row[0] for row in rows]
    except SQLAlchemyError as exc:
        raise source.unreadable(exc) from None


__all__ = ["LOOSE_LIMIT", "NotOrdered", "SortedReferences", "orderable", "read_sorted"]
