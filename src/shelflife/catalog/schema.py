"""The catalog's tables. Alembic migrations under ``migrations/`` create and evolve them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# Keys compare in byte order everywhere: PostgreSQL's default collation would not
# (S3 lists in UTF-8 byte order), and "C" also lets LIKE 'prefix%' use the index.
KeyType = String(1024).with_variant(String(1024, collation="C"), "postgresql")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, stored as integer microseconds since the epoch.

    Integers cost nothing to bind or compare on any database, where SQLite would format
    and parse a string for every value; they are exact and carry no time zone ambiguity.
    (In SQL: ``to_timestamp(modified_at / 1e6)`` on PostgreSQL,
    ``datetime(modified_at / 1e6, 'unixepoch')`` on SQLite.)
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return to_micros(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return EPOCH + timedelta(microseconds=int(value))


objects = Table(
    "objects",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("checksum", String(80)),
    Column("etag", String(256)),
    Column("modified_at", UTCDateTime, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("last_accessed_at", UTCDateTime),
    Column("scan_id", Integer),
    # present: on its tier. Later layers add states of their own (e.g. quarantined).
    Column("state", String(16), nullable=False, server_default="present"),
    Column("tags", String(2000)),  # JSON object, set by put(tags=...) (0004)
    # First seen or written anywhere, kept across moves (DESIGN I9); entered this tier (0010).
    Column("created_at", UTCDateTime),
    Column("arrived_at", UTCDateTime),
    UniqueConstraint("tier", "key", name="uq_objects_tier_key"),
)
Index("ix_objects_tier_modified", objects.c.tier, objects.c.modified_at)

scans = Table(
    "scans",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tier", String(64), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("objects", BigInteger, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("removed", BigInteger, nullable=False, default=0),
)
Index("ix_scans_tier_started", scans.c.tier, scans.c.started_at)

# -- references, protection and orphan collection (0002) ------------------------------

ref_snapshots = Table(
    "ref_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("taken_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),  # building | ok | failed
    Column("rows", BigInteger, nullable=False, default=0),
    Column("unmatched", BigInteger, nullable=False, default=0),
    # JSON {tier: [objects, bytes]} the references named, when they were marked by merge
    # and no `refs` rows were written (0011)
    Column("counts", Text),
)

refs = Table(
    "refs",
    metadata,
    Column("snapshot_id", Integer, nullable=False),
    Column("tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
    Column("source", Integer),  # index into [[references]] (0004)
)
Index("ix_refs_snapshot_key", refs.c.snapshot_id, refs.c.key)

pins = Table(
    "pins",
    metadata,
    Column("tier", String(64), primary_key=True),
    Column("key", KeyType, primary_key=True),
    Column("until", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_leases_tier_key", leases.c.tier, leases.c.key)

plan_items = Table(
    # A plan's actions and skips, written as they are planned (0009).
    "plan_items",
    metadata,
    Column("plan_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(8), nullable=False),  # action | skip
    Column("action", String(32)),
    Column("rule", String(128), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
    Column("bytes", BigInteger),
    Column("to_tier", String(64)),
    Column("etag", String(256)),
    Column("modified_at", UTCDateTime),
    Column("rows", String(2000)),  # JSON: what an expiration does to rows, per source
    Column("reason", String(2000)),
    Column("age", String(16)),  # the basis the rule's age counted from, and its instant (0010)
    Column("aged_from", UTCDateTime),
)
Index("ix_plan_items_plan_tier_key", plan_items.c.plan_id, plan_items.c.tier, plan_items.c.key)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
    Column("trash_key", KeyType, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("quarantined_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),  # held | restored | purged
)
Index("ix_quarantine_tier_key", quarantine.c.tier, quarantine.c.key)
Index("ix_quarantine_state_expires", quarantine.c.state, quarantine.c.expires_at)


def from_micros(value: int) -> datetime:
    """The instant a stored value stands for (what UTCDateTime reads), for raw reads."""
    return EPOCH + timedelta(microseconds=value)


def to_micros(value: datetime) -> int:
    """The stored form of an instant (what UTCDateTime binds), for bulk writes."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the catalog; pass an aware UTC instant")
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def bulk_execute(
    conn: Any,
    statement: Any,
    rows: Sequence[Mapping[str, Any]] | Sequence[tuple[Any, ...]],
    columns: Sequence[str] | None = None,
) -> None:
    """Execute ``statement`` for many rows, compiled once, values passed to the driver as is.

    Rows are mappings, or tuples of the values of ``columns`` in that order. SQLAlchemy
    would build the parameters of every row in Python (about as costly as the insert
    itself); values must already be in stored form (instants via ``to_micros``).
    """
    if not rows:
        return
    names = list(columns) if columns is not None else list(rows[0])
    compiled = statement.compile(dialect=conn.dialect, column_keys=names)
    fixed = {name: value for name, value in compiled.params.items() if name not in names}
    position = {name: index for index, name in enumerate(names)}
    if columns is not None:
        tuples: Sequence[tuple[Any, ...]] = rows  # type: ignore[assignment]
    else:
        tuples = [tuple(row[name] for name in names) for row in rows]  # type: ignore[index]
    params: Any
    if compiled.positional:
        order = compiled.positiontup
        if list(order) == names:
            params = tuples  # the statement takes the rows as they are
        else:
            params = [
                tuple(row[position[name]] if name in position else fixed[name] for name in order)
                for row in tuples
            ]
    else:
        params = [{**fixed, **dict(zip(names, row, strict=True))} for row in tuples]
    conn.exec_driver_sql(str(compiled), params)


# Rows above which PostgreSQL gets them by COPY into a staging table (one round trip for
# the rows, one statement to merge them) rather than as a batch of statements.
COPY_ROWS = 500


def bulk_insert(
    conn: Any, table: Table, rows: Sequence[tuple[Any, ...]], columns: Sequence[str]
) -> None:
    """Insert many new rows into ``table`` (no conflict possible: a plan's items, keyed
    by a fresh plan id), each a tuple of the values of ``columns`` in stored form. On
    PostgreSQL a large batch is copied straight into the table; elsewhere it is one
    compiled statement (:func:`bulk_execute`)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) < COPY_ROWS:
        bulk_execute(conn, table.insert(), rows, columns)
        return
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(column_) for column_ in columns)
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def bulk_upsert(
    conn: Any,
    table: Table,
    rows: Sequence[tuple[Any, ...]],
    columns: Sequence[str],
    statement_for: Callable[[Any], Any],
) -> None:
    """Insert (or upsert) many rows into ``table``, each a tuple of the values of
    ``columns``: ``statement_for`` turns the dialect's insert construct into the statement
    (``on_conflict_do_update`` …). Values in stored form, unique per conflict target.

    On PostgreSQL a large batch is copied into a temporary table that lives for the
    transaction, then merged by one ``INSERT … SELECT``; elsewhere it is executed as one
    compiled statement (:func:`bulk_execute`)."""
    if not rows:
        return
    name = conn.dialect.name
    if name != "postgresql" or len(rows) < COPY_ROWS:
        dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
        bulk_execute(conn, statement_for(dialect_insert(table)), rows, columns)
        return
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(column_) for column_ in columns)
    stage = f"shelflife_stage_{table.name}"
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS "
        f"SELECT {names} FROM {table.name} WITH NO DATA"
    )
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    staged = sql_table(stage, *(sql_column(column_) for column_ in columns))
    source = select(*staged.c).select_from(staged)
    conn.execute(statement_for(postgresql.insert(table).from_select(list(columns), source)))
    conn.exec_driver_sql(f"DROP TABLE {stage}")


# -- migration journal and run lock (0003) ---------------------------------------------

journal = Table(
    "journal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("src_tier", String(64), nullable=False),
    Column("dst_tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("checksum", String(80)),
    # copying | copied | repointing | deleting | done | failed | undone
    Column("step", String(16), nullable=False),
    Column("error", String(1000)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_journal_step", journal.c.step)

# -- the run lease (0015) ----------------------------------------------------------------
# One row (id 1): the run that holds the catalog, renewed by its coordinator until
# ``expires`` (epoch seconds by the database's clock; the host's on SQLite). token is
# NULL while no run holds it.
run_lease = Table(
    "run_lease",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(32)),
    Column("run_id", String(64)),
    Column("command", String(255)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("identity", String(255)),  # boot/pid namespace/pid/start time: is it gone?
    Column("since", UTCDateTime),
    Column("expires", Double),
    Column("period", Double),
    Column("fanned_out", Boolean, nullable=False, default=False),
)

# A worker taking a batch of a fanned-out run holds a row here, renewed while it works:
# a coordinator taking over waits until the old run's workers are done.
lease_workers = Table(
    "lease_workers",
    metadata,
    Column("token", String(32), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("expires", Double, nullable=False),
)


# -- plans and run history (0004) --------------------------------------------------------

plans = Table(
    "plans",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("evaluated_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # building | open | applied
    Column("actions", BigInteger, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("applied_at", UTCDateTime),
    Column("run_id", String(64)),
    Column("header", Text),  # JSON: rules, refusals, notes, warnings of the plan (0009)
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("command", String(32), nullable=False),  # run | apply | gc | enforce | expire
    Column("trigger", String(32), nullable=False),  # cli | api | schedule | celery | python
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # running | ok | partial | refused | stopped | failed
    Column("status", String(16), nullable=False),
    Column("dry_run", Integer, nullable=False, default=0),
    Column("plan_id", String(64)),
    Column("totals", String(4000)),  # JSON: {action: {objects, bytes}}
    Column("failed_count", BigInteger, nullable=False, default=0),
    Column("failures", String(20000)),  # JSON: the first failures
    Column("error", String(2000)),
    Column("host", String(255)),
    Column("pid", Integer),
)
Index("ix_runs_started", runs.c.started_at)


# -- metrics (0005) ----------------------------------------------------------------------

# Cumulative counters (Prometheus ``_total`` series) kept in the catalog, so they survive
# restarts and every process that serves /metrics reports the same values.
counters = Table(
    "counters",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("labels", String(512), primary_key=True),  # JSON object, keys sorted
    Column("value", BigInteger, nullable=False, default=0),
)

# The stats JSON (per-tier figures, health) as of the last run or ``stats --refresh``:
# what /metrics and /metrics/storage serve, without touching a store.
stats_snapshots = Table(
    "stats_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("taken_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
)


# -- API tokens (0006) -------------------------------------------------------------------

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("hash", String(100), nullable=False),  # "sha256:<hex>": the token itself is never kept
    Column("scopes", String(64), nullable=False),  # comma-separated: read, write, admin
    Column("created_at", UTCDateTime, nullable=False),
)


# -- schedules (0007) ----------------------------------------------------------------------

# The latest due time each schedule entry was claimed for: a daemon claims a slot with a
# conditional UPDATE before running it, so two daemons on one catalog run it once, and a
# daemon back from downtime runs a missed entry once, not once per missed slot.
schedule_state = Table(
    "schedule_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_due_at", UTCDateTime, nullable=False),
)


# -- fanned-out runs (0008) ----------------------------------------------------------------

# The outcome of each action of a run whose batches ran on Celery workers: written
# "pending" before an action is taken and final after, so a redelivered batch neither
# repeats what was done nor counts it twice, and the run's totals come from here.
run_actions = Table(
    "run_actions",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("action", String(32), primary_key=True),
    Column("tier", String(64), primary_key=True),
    Column("key", KeyType, primary_key=True),
    Column("rule", String(128), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("to_tier", String(64)),
    Column("outcome", String(16), nullable=False),  # pending | done | skipped | failed
    Column("detail", String(1000)),
    # the basis the rule's age counted from, and its instant, for the action log (0012)
    Column("age", String(16)),
    Column("aged_from", UTCDateTime),
)


# -- the action log (0012) -----------------------------------------------------------------

# Every action taken, skipped or failed by a real run (and by rm, restore, recall,
# recover, release), kept for ``[action_log] keep``: "what happened to this object, and
# why". Ids increase as entries are written: the cursor of paging and of JSON lines export.
action_log = Table(
    "action_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("run_id", String(64)),  # None: a command that is no run (rm, restore, recall …)
    Column("command", String(32), nullable=False),
    Column("rule", String(128)),
    Column("action", String(32), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("to_tier", String(64)),
    Column("key", KeyType, nullable=False),
    Column("bytes", BigInteger),
    Column("outcome", String(16), nullable=False),  # done | skipped | failed
    Column("reason", String(2000)),  # why it was selected; why skipped; the error
    Column("age", String(16)),  # the basis the rule's age counted from, and its instant
    Column("aged_from", UTCDateTime),
    Column("detail", String(2000)),
    sqlite_autoincrement=True,  # ids never restart, even once pruned empty (0014)
)
Index("ix_action_log_key", action_log.c.key, action_log.c.id)
Index("ix_action_log_rule", action_log.c.rule, action_log.c.id)
Index("ix_action_log_run", action_log.c.run_id, action_log.c.id)
Index("ix_action_log_recorded", action_log.c.recorded_at)

# -- request rate limits (0013) ------------------------------------------------------------

# The next free request slot of each rate-limited tier, in microseconds since the epoch:
# every process using the catalog reserves its slices of the tier's request time here
# (0013), so that together they stay under the tier's max_requests_per_second.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("tier", String(64), primary_key=True),
    Column("next_slot_us", BigInteger, nullable=False),
)
