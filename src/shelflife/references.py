"""Reference sources: the application database columns whose values point at objects.

Each ``[[references]]`` entry names a database, a table, a column and an optional
``where``. Values are streamed with a server-side cursor (memory stays bounded however
many rows there are) and parsed into locations by the tiers' spellings; values that match
no tier are counted and reported, never guessed. Lookups of given values use the
column's index, in batches, one statement per batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    column,
    create_engine,
    delete,
    func,
    inspect,
    select,
    table,
    text,
    update,
)
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from shelflife.config.model import Config, ReferenceConfig
from shelflife.errors import RefusedError, ShelflifeError
from shelflife.locations import Location, Locator

STREAM_BATCH = 10_000
LOOKUP_BATCH = 500
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class SourceUnreadable(RefusedError):
    """A reference source could not be read: nothing may be deleted on its account."""


@dataclass
class ParseReport:
    """What streaming one source found."""

    rows: int = 0
    parsed: int = 0
    unmatched: int = 0
    examples: list[str] = field(default_factory=list)

    def note_unmatched(self, value: str) -> None:
        self.unmatched += 1
        if len(self.examples) < 5:
            self.examples.append(value)


class Databases:
    """One engine per ``[databases.NAME]``, opened on first use."""

    def __init__(self, config: Config) -> None:
        self._urls = {name: db.url.get_secret_value() for name, db in config.databases.items()}
        self._engines: dict[str, Engine] = {}

    def engine(self, name: str) -> Engine:
        if name not in self._engines:
            self._engines[name] = create_engine(self._urls[name], pool_pre_ping=True)
        return self._engines[name]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


class ReferenceSource:
    """One declared column, read and searched through SQLAlchemy."""

    def __init__(self, ref: ReferenceConfig, engine: Engine) -> None:
        for name in (ref.table, ref.column):
            if not _IDENTIFIER.match(name):
                raise ShelflifeError(
                    f"reference {ref.database}.{ref.table}.{ref.column}: {name!r} is not a plain "
                    "table or column name"
                )
        self.config = ref
        self.engine = engine
        schema, _, name = ref.table.rpartition(".")
        self.table = table(name, column(ref.column), schema=schema or None)
        self.column = self.table.c[ref.column]

    @property
    def label(self) -> str:
        return f"{self.config.database}.{self.config.table}.{self.config.column}"

    def _where(self) -> Any:
        clauses: list[Any] = [self.column.is_not(None)]
        if self.config.where:
            clauses.append(text(f"({self.config.where})"))
        return and_(*clauses)

    def iter_values(self, batch: int = STREAM_BATCH) -> Iterator[list[str]]:
        """Every non-null value, in batches, through a server-side cursor."""
        query = select(self.column).where(self._where())
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
                for rows in result.partitions(batch):
                    yield [str(row[0]) for row in rows]
        except SQLAlchemyError as exc:
            raise self._unreadable(exc) from None

    def count(self) -> int:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).where(self._where())).scalar_one())
        except SQLAlchemyError as exc:
            raise self._unreadable(exc) from None

    def present(self, values: Sequence[str]) -> set[str]:
        """Which of ``values`` some row holds now (uses the column's index)."""
        found: set[str] = set()
        try:
            with self.engine.connect() as conn:
                for start in range(0, len(values), LOOKUP_BATCH):
                    chunk = values[start : start + LOOKUP_BATCH]
                    query = select(self.column).where(self._where(), self.column.in_(chunk))
                    found.update(str(row[0]) for row in conn.execute(query))
        except SQLAlchemyError as exc:
            raise self._unreadable(exc) from None
        return found

    def expire_rows(self, values: Sequence[str]) -> int:
        """Do what ``on_expire`` says to the rows holding one of ``values``: set the column
        to NULL (``null``) or delete the row (``delete-row``), one statement per batch, in
        one transaction. Returns the number of rows changed."""
        behaviour = self.config.on_expire
        if behaviour == "block":
            raise ShelflifeError(f"{self.label} blocks expiration; its rows are never changed")
        changed = 0
        try:
            with self.engine.begin() as conn:
                for start in range(0, len(values), LOOKUP_BATCH):
                    chunk = list(values[start : start + LOOKUP_BATCH])
                    condition = and_(self._where(), self.column.in_(chunk))
                    statement: Any = (
                        update(self.table).where(condition).values({self.config.column: None})
                        if behaviour == "null"
                        else delete(self.table).where(condition)
                    )
                    changed += conn.execute(statement).rowcount or 0
        except SQLAlchemyError as exc:
            raise self._unreadable(exc) from None
        return changed

    def has_index(self) -> bool | None:
        """Whether some index leads with the column (None when it cannot be told)."""
        schema, _, name = self.config.table.rpartition(".")
        try:
            inspector = inspect(self.engine)
            indexes = inspector.get_indexes(name, schema=schema or None)
            leading = {index["column_names"][0] for index in indexes if index["column_names"]}
            unique = inspector.get_unique_constraints(name, schema=schema or None)
            leading |= {c["column_names"][0] for c in unique if c["column_names"]}
            primary = inspector.get_pk_constraint(name, schema=schema or None)
            if primary.get("constrained_columns"):
                leading.add(primary["constrained_columns"][0])
        except (SQLAlchemyError, NoSuchTableError):
            return None
        return self.config.column in leading

    def _unreadable(self, exc: Exception) -> SourceUnreadable:
        where = self.engine.url.render_as_string(hide_password=True)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        return SourceUnreadable(
            f"cannot read references from {self.label} ({where}): {detail}",
            hint="fix the database, table or column in [[references]], or make it reachable; "
            "nothing is deleted while a reference source cannot be read",
        )


def open_sources(config: Config, databases: Databases) -> list[ReferenceSource]:
    return [ReferenceSource(ref, databases.engine(ref.database)) for ref in config.references]


def source_index(config: Config, source: ReferenceSource) -> int | None:
    """The position of ``source`` under ``[[references]]`` (how snapshots name it)."""
    try:
        return config.references.index(source.config)
    except ValueError:
        return None


def parse_values(
    locator: Locator, values: Iterable[str], report: ParseReport
) -> Iterator[Location]:
    """Locations the values name; a bare key yields one location per bare-key tier."""
    for value in values:
        report.rows += 1
        location = locator.parse(value)
        if location is not None:
            report.parsed += 1
            yield location
            continue
        bare = locator.bare_tiers
        if bare and _plausible_key(value):
            report.parsed += 1
            for tier in bare:
                yield Location(tier, value)
        else:
            report.note_unmatched(value)


def spellings(locator: Locator, config: Config, key: str) -> list[str]:
    """Every value a row could hold for ``key`` on any tier (for per-batch re-checks)."""
    values = {key}
    for tier in config.tiers.values():
        for template in (tier.ref_format, *tier.ref_aliases):
            values.add(template.replace("{key}", key))
    return sorted(values)


def _plausible_key(value: str) -> bool:
    from shelflife.errors import InvalidKeyError
    from shelflife.keys import validate_key

    try:
        validate_key(value)
    except InvalidKeyError:
        return False
    return True


__all__ = [
    "Databases",
    "ParseReport",
    "ReferenceSource",
    "SourceUnreadable",
    "open_sources",
    "parse_values",
    "source_index",
    "spellings",
]
