"""Reference sources: the application database columns whose values point at objects.

Each ``[[references]]`` entry names a database, a table, a column, an optional ``where``
and a ``kind`` — how a value holds references:

- ``value``: the whole value is one reference (``s3://bucket/out/x.mp4``, a public URL,
  a bare key);
- ``json``: the strings of a JSON document, those under ``path`` or every one;
- ``array``: the elements of a PostgreSQL array;
- ``text``: every substring of free text spelled like a location (Markdown, HTML).

Every reference string is resolved by the one resolver
(:class:`~shelflife.model.locations.Locator`).
Values are streamed with a server-side cursor (memory stays bounded however many rows
there are). Lookups for given keys — the sweep-time re-check, expiration, migration's
rewrite, ``release`` — are one statement per batch: ``value`` columns by equality on
every spelling of the keys (the column's index), plus a prefix match for web URLs that
may carry a query string; the other kinds by a substring match on the keys (a scan:
JSON and free text have no index to use), each candidate row then read by the resolver.

Rows are changed only by whole-value equality (``WHERE column = the value read``), so a
row the application changed meanwhile is left alone.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    create_engine,
    delete,
    func,
    inspect,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchTableError, SQLAlchemyError

from shelflife.base.extras import needs
from shelflife.base.jsonpath import Step, compile_path, replace_strings, strings
from shelflife.config.model import Config, ReferenceConfig
from shelflife.errors import RefusedError, ShelflifeError
from shelflife.model.locations import Location, Locator

STREAM_BATCH = 10_000
LOOKUP_BATCH = 500
LIKE_BATCH = 200  # OR'd LIKE clauses per statement (SQLite's expression depth is 1000)
EXAMPLES = 5
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class SourceUnreadable(RefusedError):
    """A reference source could not be read: nothing may be deleted on its account."""


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference string found in a value, and what it resolves to."""

    text: str
    locations: tuple[Location, ...]
    counted: bool  # expected to name an object (counts toward max_unmatched)


@dataclass
class SourceReport:
    """What reading one source found: how many reference strings it held, how many named
    no tier, and which tiers' places it spells in a way no tier declares."""

    label: str
    max_unmatched: float = 0.01
    rows: int = 0
    counted: int = 0
    matched: int = 0
    unmatched: int = 0
    examples: list[str] = field(default_factory=list)
    tiers: set[str] = field(default_factory=set)
    near: dict[str, int] = field(default_factory=dict)
    near_examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, reference: Reference, locator: Locator) -> None:
        if reference.locations:
            self.matched += reference.counted
            self.counted += reference.counted
            self.tiers.update(location.tier for location in reference.locations)
            if locator.only_bare(list(reference.locations)):
                # read as a bare key; it may still spell a tier's place in another way
                self._near(reference, locator, {loc.tier for loc in reference.locations})
            return
        if reference.counted:
            self.counted += 1
            self.unmatched += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(reference.text)
        self._near(reference, locator, set())

    def _near(self, reference: Reference, locator: Locator, resolved: set[str]) -> None:
        tier = locator.near_miss(reference.text, resolved)
        if tier is not None:
            self.near[tier] = self.near.get(tier, 0) + 1
            shown = self.near_examples.setdefault(tier, [])
            if len(shown) < EXAMPLES:
                shown.append(reference.text)

    @property
    def unmatched_share(self) -> float:
        return self.unmatched / self.counted if self.counted else 0.0

    def distrusted(self, locator: Locator, tiers: Sequence[str]) -> dict[str, str]:
        """Per tier, why this source cannot be trusted to protect its objects (empty when
        it can): values spelling the tier's place in an undeclared way, at any share; or
        more than ``max_unmatched`` of its values matching no tier at all."""
        reasons: dict[str, str] = {}
        for tier, count in sorted(self.near.items()):
            example = self.near_examples[tier][0]
            alias = locator.suggest_alias(example, tier)
            reasons[tier] = (
                f"{count} value(s) of {self.label} name tier {tier}'s place in a spelling no "
                f"tier declares, e.g. {example!r}; such rows would not protect their objects. "
                f'If they name the same objects, add to [tiers.{tier}]: ref_aliases = ["{alias}"]'
            )
        if self.counted and self.unmatched_share > self.max_unmatched:
            message = (
                f"{self.unmatched} of {self.counted} values of {self.label} "
                f"({self.unmatched_share:.1%}) match no tier's spelling, above its "
                f"max_unmatched of {self.max_unmatched:.1%}, e.g. {self.examples[:3]}. "
                "Declare their spelling (ref_aliases on the tier they name), leave them out "
                "with the reference's `where`, or raise max_unmatched on this [[references]] "
                "entry if they name no object"
            )
            for tier in sorted(self.tiers) or list(tiers):
                reasons.setdefault(tier, message)
        return reasons


@dataclass
class ParseReport:
    """What reading every source found (one :class:`SourceReport` each)."""

    sources: list[SourceReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.sources)

    @property
    def parsed(self) -> int:
        return sum(s.matched for s in self.sources)

    @property
    def unmatched(self) -> int:
        return sum(s.unmatched for s in self.sources)

    @property
    def examples(self) -> list[str]:
        return [e for s in self.sources for e in s.examples][:EXAMPLES]

    def distrusted(self, locator: Locator, tiers: Sequence[str]) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for source in self.sources:
            for tier, reason in source.distrusted(locator, tiers).items():
                reasons.setdefault(tier, reason)
        return reasons


DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
"""A URL that names no driver gets the one its extra installs (SQLAlchemy's defaults,
psycopg2 and MySQLdb, are what no extra installs)."""


def database_url(url: str) -> str | URL:
    """``url`` with the installed driver where it names none (``postgresql://``,
    ``mysql://``, ``mariadb://``); otherwise as written."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # create_engine reports it
    if parsed.drivername in DEFAULT_DRIVERS:
        return parsed.set(drivername=DEFAULT_DRIVERS[parsed.drivername])
    if parsed.drivername == "mariadb":
        return parsed.set(drivername="mariadb+pymysql")
    return parsed


def sqlite_file(url: str | URL) -> str | None:
    """The file a SQLite URL opens (as written: relative to the working directory), or
    None for another database, an in-memory one or a URL that passes its own options."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.query:
        return None
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def application_engine(url: str, *, read_only: bool = False, **options: Any) -> Engine:
    """An engine on an application database. A SQLite file is opened as it is, never
    created: a file that is not there is an error to connect, not a new empty database
    in the application's folder (``read_only``: opened for reading only)."""
    target = database_url(url)
    path = sqlite_file(target)
    if path is not None:
        uri = f"file:{quote(os.path.abspath(path))}?mode={'ro' if read_only else 'rw'}"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False)

        options["creator"] = connect
    return create_engine(target, **options)


class Databases:
    """One engine per ``[databases.NAME]``, opened on first use."""

    def __init__(self, config: Config) -> None:
        self._urls = {name: db.url.get_secret_value() for name, db in config.databases.items()}
        self._engines: dict[str, Engine] = {}

    def engine(self, name: str) -> Engine:
        if name not in self._engines:
            with needs(f"[databases.{name}]"):
                self._engines[name] = application_engine(self._urls[name], pool_pre_ping=True)
        return self._engines[name]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


class ReferenceReader:
    """How a source's values hold references: the one place a value of any kind is read."""

    def __init__(self, kind: str, path: str | None, locator: Locator) -> None:
        self.kind = kind
        self.steps: tuple[Step, ...] | None = compile_path(path) if path else None
        self.locator = locator

    def references(self, value: Any) -> list[Reference]:
        """The reference strings ``value`` (as the database returned it) holds."""
        if value is None:
            return []
        if self.kind == "value":
            return self._whole(str(value), counted=True)
        if self.kind == "array":
            items = value
            if isinstance(value, str):  # a listen payload: the array as JSON
                try:
                    items = json.loads(value)
                except ValueError:
                    return self._whole(value, counted=True)
            if not isinstance(items, list):
                return self._whole(str(items), counted=True)
            found: list[Reference] = []
            for item in items:
                if item is not None:
                    found += self._whole(str(item), counted=True)
            return found
        if self.kind == "json":
            document = value
            if isinstance(value, str | bytes):
                try:
                    document = json.loads(value)
                except ValueError:  # not JSON: read it as one value, so it is seen
                    return self._whole(str(value), counted=True)
            found = []
            for item in strings(document, self.steps):
                found += self._inside(item, counted=self.steps is not None)
            return found
        return self._free_text(str(value))

    def _whole(self, item: str, *, counted: bool) -> list[Reference]:
        if not item.strip():
            return []
        return [Reference(item, tuple(self.locator.resolve(item)), counted)]

    def _inside(self, item: str, *, counted: bool) -> list[Reference]:
        """A JSON string: a whole reference, or free text holding some."""
        whole = self._whole(item, counted=counted)
        if not whole or whole[0].locations or counted:
            return whole
        return self._free_text(item)

    def _free_text(self, body: str) -> list[Reference]:
        """One reference per place a spelling starts: every reading of it (the text may
        end it at a space, a bracket or punctuation) is one of its locations; shown as
        the shortest reading that names a location."""
        found = []
        for _, candidates in self.locator.spans(body):
            readings = [(c, self.locator.resolve(c)) for c in candidates]
            named = sorted(((c, locs) for c, locs in readings if locs), key=lambda r: len(r[0]))
            if named:
                locations = dict.fromkeys(loc for _, locs in named for loc in locs)
                found.append(Reference(named[0][0], tuple(locations), counted=False))
        for token in self.locator.url_tokens(body):
            if not self.locator.resolve(token) and self.locator.near_miss(token):
                found.append(Reference(token, (), counted=False))
        return found

    def locations(self, value: Any) -> set[Location]:
        return {loc for ref in self.references(value) for loc in ref.locations}

    # -- rewriting ---------------------------------------------------------------------------

    def rewrite(self, value: Any, moves: dict[Location, Location]) -> Any:
        """``value`` with every reference to a moved location spelled at its new one."""
        if self.kind == "value":
            return self._rewrite_one(str(value), moves)
        if self.kind == "array":
            return [None if item is None else self._rewrite_one(str(item), moves) for item in value]
        if self.kind == "json":
            try:
                document = json.loads(value) if isinstance(value, str | bytes) else value
            except ValueError:  # not JSON: read as one value (as references() reads it)
                return self._rewrite_one(str(value), moves)
            changed = replace_strings(
                document, self.steps, lambda item: self._rewrite_inside(item, moves)
            )
            if changed == document:
                return value
            try:
                return json.dumps(
                    changed, ensure_ascii=False, separators=(", ", ": "), allow_nan=False
                )
            except ValueError:  # NaN or Infinity: left as it is, so the move is not finished
                return value
        return self._rewrite_text(str(value), moves)

    def _rewrite_one(
        self, item: str, moves: dict[Location, Location], *, in_text: bool = False
    ) -> str:
        for location in self.locator.resolve(item):
            if location in moves:
                if in_text:
                    return self.locator.render_in_text(moves[location], item)
                return self.locator.render_like(moves[location], item)
        return item

    def _rewrite_inside(self, item: str, moves: dict[Location, Location]) -> str:
        if self.locator.resolve(item):
            return self._rewrite_one(item, moves)
        return self._rewrite_text(item, moves) if self.steps is None else item

    def _rewrite_text(self, body: str, moves: dict[Location, Location]) -> str:
        """Each reference found at a place a spelling starts, rewritten there (the longest
        reading that names a moved location); nothing else in the text changes."""
        edits: list[tuple[int, int, str]] = []
        for start, candidates in self.locator.spans(body):
            for candidate in sorted(candidates, key=len, reverse=True):
                new = self._rewrite_one(candidate, moves, in_text=True)
                if new != candidate:
                    edits.append((start, start + len(candidate), new))
                    break
        if not edits:
            return body
        parts: list[str] = []
        at = 0
        for start, end, new in sorted(edits):
            if start < at:
                continue  # inside a reference already rewritten
            parts += [body[at:start], new]
            at = end
        parts.append(body[at:])
        return "".join(parts)


class ReferenceSource:
    """One declared column, read, searched and rewritten through SQLAlchemy."""

    def __init__(
        self, ref: ReferenceConfig, engine: Engine, locator: Locator | None = None
    ) -> None:
        for name in (ref.table, ref.column):
            if not _IDENTIFIER.match(name):
                raise ShelflifeError(
                    f"reference {ref.database}.{ref.table}.{ref.column}: {name!r} is not a plain "
                    "table or column name"
                )
        self.config = ref
        self.engine = engine
        self._locator = locator
        schema, _, name = ref.table.rpartition(".")
        self.table = table(name, column(ref.column), schema=schema or None)
        self.column = self.table.c[ref.column]
        self.hint: str | None = None  # what to fix when it cannot be read (else generic)
        self._pg_type: str | None = None  # "json", "jsonb", "array" or "" once known
        self._pg_text = False  # a PostgreSQL text type (one a collation applies to)
        self._has_irregular: bool | None = None

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def locator(self) -> Locator:
        if self._locator is None:
            raise ShelflifeError(f"{self.label} was opened without the tiers' spellings")
        return self._locator

    @property
    def reader(self) -> ReferenceReader:
        return ReferenceReader(self.config.kind, self.config.path, self.locator)

    def where_clause(self) -> Any:
        """The rows this source reads: non-null values, within its ``where``."""
        clauses: list[Any] = [self.column.is_not(None)]
        if self.config.where:
            clauses.append(text(f"({self.config.where})"))
        return and_(*clauses)

    # -- the column's type, where the dialect matters ---------------------------------------

    def postgres_type(self) -> str:
        """On PostgreSQL: "json", "jsonb" or "array" for such columns, "" otherwise."""
        if self._pg_type is None:
            self._pg_type = ""
            if self.engine.dialect.name == "postgresql":
                schema, _, name = self.config.table.rpartition(".")
                try:
                    columns = inspect(self.engine).get_columns(name, schema=schema or None)
                except (SQLAlchemyError, NoSuchTableError) as exc:
                    raise self.unreadable(exc) from None
                for info in columns:
                    if info["name"] == self.config.column:
                        kind = info["type"]
                        self._pg_text = isinstance(kind, String) and not isinstance(kind, JSON)
                        if isinstance(kind, JSONB):
                            self._pg_type = "jsonb"
                        elif isinstance(kind, JSON):
                            self._pg_type = "json"
                        elif isinstance(kind, ARRAY):
                            self._pg_type = "array"
        if self.kind == "array" and self._pg_type != "array":
            raise ShelflifeError(
                f"{self.label} has kind = 'array', which needs a PostgreSQL array column",
                hint="use kind = 'json' for a JSON array, or kind = 'value'",
            )
        return self._pg_type

    def collates(self) -> bool:
        """Whether the column can be ordered by a collation (``COLLATE "C"``): on
        PostgreSQL only text types can (not uuid, numbers, bytea, enums)."""
        self.postgres_type()
        return self.engine.dialect.name != "postgresql" or self._pg_text

    def _read(self) -> Any:
        """The column as it is read and compared: JSON columns as their text."""
        if self.postgres_type() in ("json", "jsonb"):
            return cast(self.column, Text)
        return self.column

    def _haystack(self) -> Any:
        """The column as text to search in for a substring."""
        if self.postgres_type() == "array":
            return func.array_to_string(self.column, "\n")
        if self.engine.dialect.name == "postgresql":
            return cast(self.column, Text)
        return self.column

    # -- reading -------------------------------------------------------------------------------

    def iter_values(self, batch: int = STREAM_BATCH) -> Iterator[list[Any]]:
        """Every non-null value, in batches, through a server-side cursor."""
        try:
            query = select(self._read()).where(self.where_clause())
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
                for rows in result.partitions(batch):
                    yield [row[0] for row in rows]
        except SQLAlchemyError as exc:
            raise self.unreadable(exc) from None

    def iter_references(
        self, report: SourceReport | None = None, batch: int = STREAM_BATCH
    ) -> Iterator[list[Reference]]:
        """The references of every row, in batches; ``report`` counts what was found."""
        reader = self.reader
        for values in self.iter_values(batch):
            found: list[Reference] = []
            for value in values:
                references = reader.references(value)
                if report is not None:
                    report.rows += 1
                    for reference in references:
                        report.note(reference, self.locator)
                found += references
            yield found

    def new_report(self) -> SourceReport:
        return SourceReport(self.label, self.config.max_unmatched)

    def count(self) -> int:
        try:
            with self.engine.connect() as conn:
                counted = conn.execute(select(func.count()).where(self.where_clause()))
                return int(counted.scalar_one())
        except SQLAlchemyError as exc:
            raise self.unreadable(exc) from None

    # -- lookups for given keys ----------------------------------------------------------------

    def _irregular(self) -> bool:
        """Whether some value of this ``value`` column names its object in a way equality
        on the spellings cannot find (surrounding whitespace, percent-encoding other than
        the canonical one, a query string or fragment): then lookups also search by
        substring. Asked once per source: the values that might be irregular are read
        until one is."""
        if self._has_irregular is None:
            column_ = self.column
            suspects = (
                select(column_)
                .where(
                    self.where_clause(),
                    or_(
                        column_ != func.trim(column_),
                        *(column_.contains(c, autoescape=True) for c in "%?#\n\t"),
                    ),
                )
                .execution_options(stream_results=True, yield_per=STREAM_BATCH)
            )
            self._has_irregular = False
            try:
                with self.engine.connect() as conn:
                    for (value,) in conn.execute(suspects):
                        if not self._canonical(str(value)):
                            self._has_irregular = True
                            break
            except SQLAlchemyError as exc:
                raise self.unreadable(exc) from None
        return self._has_irregular

    def _canonical(self, value: str) -> bool:
        """Whether equality on the spellings finds ``value`` for every location it names
        (a value naming nothing protects nothing either way)."""
        return all(
            value in self.locator.spellings_on(loc.tier, loc.key)
            for loc in self.locator.resolve(value)
        )

    def _lookups(self, keys: Sequence[str]) -> Iterator[Any]:
        """WHERE clauses that together find every row that may name one of ``keys``: a
        superset of what the resolver reads (it then reads each row found)."""
        if self.kind == "value":
            values = sorted({v for key in keys for v in self.locator.spellings(key)})
            for start in range(0, len(values), LOOKUP_BATCH):
                yield self.column.in_(values[start : start + LOOKUP_BATCH])
            if not self._irregular():
                return
        haystack = func.lower(self._haystack())
        fragments = sorted({f.lower() for key in keys for f in _fragments(key)})
        if self.engine.dialect.name == "postgresql":
            # one pass over the table for the whole batch
            patterns = ["%" + _like_escape(f) + "%" for f in fragments]
            yield haystack.like(any_(bindparam(None, patterns, type_=ARRAY(Text))))
            return
        for start in range(0, len(fragments), LIKE_BATCH):
            chunk = fragments[start : start + LIKE_BATCH]
            yield or_(*(haystack.contains(f, autoescape=True) for f in chunk))

    def rows_naming(self, conn: Connection, keys: Sequence[str]) -> list[Any]:
        """The values of rows that may name one of ``keys`` (a superset: read each)."""
        found: list[Any] = []
        seen: set[str] = set()
        for clause in self._lookups(keys):
            for (value,) in conn.execute(select(self._read()).where(self.where_clause(), clause)):
                marker = repr(value)
                if marker not in seen:
                    seen.add(marker)
                    found.append(value)
        return found

    def naming(self, keys: Sequence[str]) -> set[Location]:
        """The locations among ``keys`` (on any tier) that some row names right now."""
        named: set[Location] = set()
        for row in self.naming_rows(keys):
            named |= row
        return named

    def naming_rows(self, keys: Sequence[str]) -> list[set[Location]]:
        """Per row that names one of ``keys`` right now: the locations among them it names."""
        wanted = set(keys)
        rows: list[set[Location]] = []
        reader = self.reader
        try:
            with self.engine.connect() as conn:
                values = self.rows_naming(conn, keys)
        except SQLAlchemyError as exc:
            raise self.unreadable(exc) from None
        for value in values:
            named = reader.locations(value)
            hits = {loc for loc in named if loc.key in wanted}
            if not named and self.kind == "value":
                # A value that names nothing, found by a case- or space-insensitive
                # collation (MariaDB's default): protect every key it could be.
                hits = {
                    Location(tier, key)
                    for key in _loose_matches(self.locator, keys, str(value))
                    for tier in self.locator.tiers
                }
            if hits:
                rows.append(hits)
        return rows

    # -- changing rows -------------------------------------------------------------------------

    def rewrite(self, conn: Connection, moves: dict[Location, Location]) -> int:
        """Rewrite every row naming a moved location to name its new one, in ``conn``'s
        transaction (one lookup per batch, one UPDATE statement). Returns rows changed."""
        if not moves:
            return 0
        reader = self.reader
        pairs: list[tuple[Any, Any]] = []
        for value in self.rows_naming(conn, sorted({loc.key for loc in moves})):
            new = reader.rewrite(value, moves)
            if new != value:
                pairs.append((value, new))
        if not pairs:
            return 0
        if self.kind == "value":
            return repoint(conn, self, {str(old): str(new) for old, new in pairs})
        return self._update_each(conn, pairs)

    def expire_rows(self, chosen: Callable[[Location], bool], keys: Sequence[str]) -> int:
        """Do what ``on_expire`` says to the rows naming a location ``chosen`` accepts: set
        the column to NULL (``null``) or delete the row (``delete-row``), in one
        transaction. Returns the number of rows changed."""
        behaviour = self.config.on_expire
        if behaviour == "block":
            raise ShelflifeError(f"{self.label} blocks expiration; its rows are never changed")
        reader = self.reader
        changed = 0
        try:
            with self.engine.begin() as conn:
                values = [
                    value
                    for value in self.rows_naming(conn, keys)
                    if any(chosen(loc) for loc in reader.locations(value))
                ]
                for start in range(0, len(values), LOOKUP_BATCH):
                    chunk = values[start : start + LOOKUP_BATCH]
                    condition = and_(self.where_clause(), self._equals_any(chunk))
                    statement: Any = (
                        update(self.table).where(condition).values({self.config.column: None})
                        if behaviour == "null"
                        else delete(self.table).where(condition)
                    )
                    changed += conn.execute(statement).rowcount or 0
        except SQLAlchemyError as exc:
            raise self.unreadable(exc) from None
        return changed

    def _equals_any(self, values: Sequence[Any]) -> Any:
        if self.postgres_type() == "array":
            return or_(*(self.column == bindparam(None, v, type_=ARRAY(Text)) for v in values))
        texts = [str(v) for v in values]
        read = self._read()
        # the column's index narrows; the exact comparison decides (a case-insensitive
        # collation would also match rows naming other objects)
        return and_(read.in_(texts), exact(read, self.engine.dialect.name).in_(texts))

    def _update_each(self, conn: Connection, pairs: list[tuple[Any, Any]]) -> int:
        """``UPDATE … SET column = new WHERE column = old`` for each pair, one statement."""
        pg = self.postgres_type()
        new: Any = bindparam("_shelflife_new")
        old: Any = bindparam("_shelflife_old")
        if pg == "array":
            new = bindparam("_shelflife_new", type_=ARRAY(Text))
            old = bindparam("_shelflife_old", type_=ARRAY(Text))
        elif pg in ("json", "jsonb"):
            new = cast(new, JSONB if pg == "jsonb" else JSON)
        read = self._read()
        statement = (
            update(self.table)
            .where(self.where_clause(), read == old, exact(read, conn.dialect.name) == old)
            .values({self.config.column: new})
        )
        params = [{"_shelflife_old": o, "_shelflife_new": n} for o, n in pairs]
        return int(conn.execute(statement, params).rowcount or 0)

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

    def substring_index_hint(self) -> str | None:
        """For a json or text column on PostgreSQL without an expression index on it: the
        trigram index that lets per-batch lookups (a substring search) skip the scan."""
        if self.kind not in ("json", "text") or self.engine.dialect.name != "postgresql":
            return None
        schema, _, name = self.config.table.rpartition(".")
        try:
            indexes = inspect(self.engine).get_indexes(name, schema=schema or None)
        except (SQLAlchemyError, NoSuchTableError):
            return None
        for index in indexes:
            if any(self.config.column in str(e) for e in index.get("expressions") or []):
                return None
        return (
            "CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE INDEX ON "
            f"{self.config.table} USING gin ((lower({self.config.column}::text)) gin_trgm_ops)"
        )

    def unreadable(self, exc: Exception) -> SourceUnreadable:
        """The refusal to raise when reading this source failed with ``exc``."""
        where = self.engine.url.render_as_string(hide_password=True)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        if isinstance(exc, NoSuchTableError):  # its text is the table's name alone
            detail = f"no table {detail}"
        return SourceUnreadable(
            f"cannot read references from {self.label} ({where}): {detail}",
            hint=self.hint
            or "fix the database, table or column in [[references]], or make it reachable; "
            "nothing is deleted while a reference source cannot be read",
        )


def repoint(conn: Connection, source: ReferenceSource, mapping: dict[str, str]) -> int:
    """One UPDATE rewriting every row that holds an old value to its new value.

    PostgreSQL joins the column's index against two arrays (``unnest``): the statement
    text never changes, so it is compiled once and the batch travels as two parameters.
    Elsewhere a ``CASE`` over the batch's values (MariaDB and SQLite have no arrays).
    """
    column_ = source.column
    if conn.dialect.name == "postgresql":
        quote_ = conn.dialect.identifier_preparer.quote
        table_ = ".".join(quote_(part) for part in source.config.table.split("."))
        name = quote_(column_.name)
        statement = text(
            f"UPDATE {table_} AS t SET {name} = m.new "
            "FROM unnest(CAST(:olds AS text[]), CAST(:news AS text[])) AS m(old, new) "
            f"WHERE t.{name} = m.old"
        )
        result = conn.execute(statement, {"olds": list(mapping), "news": list(mapping.values())})
    else:
        olds = list(mapping)
        byte_exact = exact(column_, conn.dialect.name)
        result = conn.execute(
            update(source.table)
            .where(column_.in_(olds), byte_exact.in_(olds))
            .values({column_.name: case(mapping, value=byte_exact)})
        )
    return int(result.rowcount or 0)


def exact(expression: Any, dialect: str) -> Any:
    """``expression`` compared byte for byte: MariaDB's and MySQL's default collations
    ignore case and trailing spaces, SQLite's NOCASE columns case."""
    if dialect in ("mysql", "mariadb"):
        return func.binary(expression)  # BINARY col: bytes compared, parameters stay text
    if dialect == "sqlite":
        return expression.collate("BINARY")
    return expression


def open_sources(
    config: Config, databases: Databases, locator: Locator | None = None
) -> list[ReferenceSource]:
    locator = locator or Locator(config)
    sources = [
        ReferenceSource(ref, databases.engine(ref.database), locator) for ref in config.references
    ]
    environment = config.environment
    if environment is not None:
        for source in sources:
            if source.config in environment.candidate_references:
                source.hint = ENVIRONMENT_HINT
    return sources


ENVIRONMENT_HINT = (
    "DATABASE_URL (or STORAGE_DATABASE_URL) must reach the application database holding "
    "video_jobs.output_path, nexus_jobs.output_path or scheduled_posts.video_path; nothing "
    "is moved or deleted while their rows cannot be read (shelflife check says what it found)"
)
"""What to fix when the ``STORAGE_*`` environment's columns cannot be read."""


def source_index(config: Config, source: ReferenceSource) -> int | None:
    """The position of ``source`` under ``[[references]]`` (how snapshots name it)."""
    try:
        return config.references.index(source.config)
    except ValueError:
        return None


_STABLE = re.compile(r"[A-Za-z0-9._~\-]+")


def _fragments(key: str) -> list[str]:
    """Substrings a value naming ``key`` holds in every spelling the resolver reads: the
    key's longest run of characters that percent-encoding and JSON escaping leave alone
    (compared case-insensitively); without one, the key raw, percent-encoded and
    JSON-escaped (both cases of ``\\u`` escapes, ``\\/`` too)."""
    runs = _STABLE.findall(key)
    longest = max(runs, key=len) if runs else ""
    if len(longest) >= 3:
        return [longest]
    escaped = json.dumps(key)[1:-1]
    found = {
        key,
        quote(key),
        escaped,
        escaped.replace("/", "\\/"),
        re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped),
        json.dumps(key, ensure_ascii=False)[1:-1],
    }
    return sorted(found)


def _like_escape(text_: str) -> str:
    """``text_`` as a literal inside a LIKE pattern (PostgreSQL's escape is a backslash)."""
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _loose_matches(locator: Locator, keys: Iterable[str], value: str) -> set[str]:
    """Keys one of whose spellings equals ``value`` up to case and trailing spaces; all
    of them if none does."""
    folded = value.casefold().rstrip(" ")
    keys = list(keys)
    found = {
        key
        for key in keys
        if any(s.casefold().rstrip(" ") == folded for s in locator.spellings(key))
    }
    return found or set(keys)


# -- columns nobody declared ---------------------------------------------------------------

UNDECLARED_SAMPLE = 200


@dataclass(frozen=True, slots=True)
class UndeclaredColumn:
    """A column no ``[[references]]`` entry names whose values point at objects."""

    database: str
    table: str
    column: str
    tiers: tuple[str, ...]
    example: str
    kind: str  # the kind to declare it with

    @property
    def label(self) -> str:
        return f"{self.database}.{self.table}.{self.column}"

    def declaration(self) -> str:
        lines = [
            "[[references]]",
            f'database = "{self.database}"',
            f'table = "{self.table}"',
            f'column = "{self.column}"',
        ]
        if self.kind != "value":
            lines.append(f'kind = "{self.kind}"')
        return "\n".join(lines)


def undeclared_columns(
    config: Config,
    databases: Databases,
    locator: Locator,
    exists: Callable[[Location], bool],
    skip_tables: Iterable[str] = (),
    sample: int = UNDECLARED_SAMPLE,
) -> list[UndeclaredColumn]:
    """Columns of the declared databases that hold references but are neither declared
    nor listed under ``[[ignore_columns]]``: whole values, strings inside JSON, and
    substrings of free text spelled like a tier's locations (a bare key counts when the
    tier holds that object). Reads a sample of each text-like column."""
    declared = {(r.database, r.table, r.column) for r in config.references}
    ignored = {(c.database, c.table, c.column) for c in config.ignore_columns}
    skipped = set(skip_tables)
    found: list[UndeclaredColumn] = []
    for name in config.databases:
        engine = databases.engine(name)
        try:
            inspector = inspect(engine)
            tables = inspector.get_table_names()
        except SQLAlchemyError:
            continue  # an unreachable database is reported by the sources that use it
        for table_name in tables:
            if table_name in skipped:
                continue
            try:
                columns = inspector.get_columns(table_name)
            except SQLAlchemyError:
                continue
            for info in columns:
                where = (name, table_name, info["name"])
                if where in declared or where in ignored or not _text_like(info["type"]):
                    continue
                finding = _column_finding(
                    engine, name, table_name, info["name"], locator, exists, sample
                )
                if finding is not None:
                    found.append(finding)
    return found


def _text_like(kind: Any) -> bool:
    from sqlalchemy import String

    return isinstance(kind, String | JSON | ARRAY)


def _column_finding(
    engine: Engine,
    database: str,
    table_name: str,
    column_name: str,
    locator: Locator,
    exists: Callable[[Location], bool],
    sample: int,
) -> UndeclaredColumn | None:
    ref: Any = column(column_name)
    source = table(table_name, ref)
    read: Any = ref
    if engine.dialect.name == "postgresql":
        read = cast(ref, Text)
    query = select(read).select_from(source).where(ref.is_not(None)).limit(sample)
    try:
        with engine.connect() as conn:
            values = [str(value) for value in conn.execute(query).scalars()]
    except SQLAlchemyError:
        return None
    bare = set(locator.bare_tiers)
    readers = {kind: ReferenceReader(kind, None, locator) for kind in ("value", "json", "text")}
    for value in values:
        for kind in ("value", "json", "text"):
            tiers: set[str] = set()
            for reference in readers[kind].references(value):
                for location in reference.locations:
                    if location.tier not in bare or exists(location):
                        tiers.add(location.tier)
            if tiers:
                is_json = kind == "json" or _is_json_document(value)
                return UndeclaredColumn(
                    database,
                    table_name,
                    column_name,
                    tuple(sorted(tiers)),
                    value[:200],
                    "json" if is_json else kind,
                )
    return None


def _is_json_document(value: str) -> bool:
    stripped = value.strip()
    if not stripped.startswith(("{", "[")):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


__all__ = [
    "Databases",
    "ParseReport",
    "Reference",
    "ReferenceReader",
    "ReferenceSource",
    "SourceReport",
    "SourceUnreadable",
    "UndeclaredColumn",
    "application_engine",
    "open_sources",
    "repoint",
    "source_index",
    "undeclared_columns",
]
