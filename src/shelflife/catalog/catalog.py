"""The catalog: shelflife's own database (SQLite by default, PostgreSQL in production).

It holds the inventory of every object per tier; later layers add the journal, leases,
pins and run history beside it. The schema is brought to the newest Alembic revision
when the catalog is opened.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from shelflife.base.extras import needs
from shelflife.catalog.schema import (
    bulk_execute,
    bulk_upsert,
    leases,
    objects,
    scans,
    to_micros,
)
from shelflife.errors import CatalogError, ConfigError
from shelflife.model.selection import ObjectView
from shelflife.stores.base import Entry, ObjectInfo, Stamps, entry_of

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = threading.Lock()
LOG = logging.getLogger("shelflife")
KEY_ORDER = "SET LOCAL enable_sort = off"  # see in_key_order
HEAD_REVISION = "0015_run_lease"  # the newest file in migrations/versions (a test checks)


def in_key_order(conn: Connection) -> None:
    """Before a read in key order, in its transaction: on PostgreSQL the read walks the
    (tier, key) index (keys ``COLLATE "C"``) instead of sorting, whatever the statistics
    say (with none, each keyset page of a scan was a sort of the rest of the tier)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(KEY_ORDER)


# One inventory row as a scan compares it: (key, size, etag, modified µs since the epoch).
Listed = tuple[str, int, str | None, int]


@dataclass(frozen=True, slots=True)
class CatalogObject:
    """One inventory row."""

    tier: str
    key: str
    size: int
    checksum: str | None
    etag: str | None
    modified_at: datetime
    first_seen_at: datetime
    last_accessed_at: datetime | None
    state: str
    tags: str | None = None  # JSON object
    created_at: datetime | None = None
    arrived_at: datetime | None = None

    def view(self) -> ObjectView:
        """The row as the planner and the executor's re-check see it."""
        return ObjectView(
            key=self.key,
            size=self.size,
            modified=self.modified_at,
            accessed=self.last_accessed_at,
            etag=self.etag,
            created=self.created_at,
            arrived=self.arrived_at,
            tags=json.loads(self.tags) if self.tags else None,
        )

    @property
    def stamps(self) -> Stamps:
        """The instants a copy of this object carries (DESIGN I9)."""
        return Stamps(created=self.created_at or self.modified_at, modified=self.modified_at)


@dataclass(frozen=True, slots=True)
class TierTotals:
    objects: int
    bytes: int


class Catalog:
    """Inventory storage over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}  # record_uploads

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Catalog:
        """Connect, and bring the schema up to date unless ``migrate`` is False."""
        engine = create_catalog_engine(url)
        catalog = cls(engine)
        if migrate:
            catalog.migrate()
        return catalog

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ------------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply pending Alembic migrations (a no-op when the schema is current).

        The common case, a current schema, is one query; Alembic is imported only when
        there is something to apply.
        """
        try:
            if self.revision() == HEAD_REVISION:
                return
        except CatalogError:
            raise
        except SQLAlchemyError:
            pass  # no alembic_version table yet: a new catalog
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.runtime.migration import MigrationContext

        alembic_cfg = AlembicConfig()
        alembic_cfg.set_main_option("script_location", str(MIGRATIONS))
        with _MIGRATION_LOCK:  # alembic's context is process-global: one upgrade at a time
            self._upgrade(alembic_cfg, MigrationContext, command)

    def _upgrade(self, alembic_cfg: Any, migration_context: Any, command: Any) -> None:
        try:
            with self.engine.begin() as conn:
                if migration_context.configure(conn).get_current_revision() == HEAD_REVISION:
                    return
                alembic_cfg.attributes["connection"] = conn
                command.upgrade(alembic_cfg, "head")
        except OperationalError as exc:
            if "already exists" not in str(exc):
                raise _unreachable(self.engine, exc) from None
        except SQLAlchemyError as exc:
            # A concurrent process may have migrated first; that is fine if it got to head.
            if self.revision() != HEAD_REVISION:
                raise CatalogError(f"cannot migrate the catalog: {exc}") from exc

    def revision(self) -> str | None:
        """The schema's Alembic revision (None for an empty database)."""
        with self._connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return None if version is None else str(version)

    # -- inventory writes ----------------------------------------------------------------

    def begin_scan(self, tier: str, now: datetime) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                scans.insert().values(tier=tier, started_at=now, status="running")
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def upsert_listed(
        self,
        tier: str,
        infos: Sequence[ObjectInfo],
        now: datetime,
        scan_id: int | None = None,
        stamps: Mapping[str, Stamps] | None = None,
    ) -> None:
        """Record objects seen in a listing (see :meth:`write_listed`)."""
        self.write_listed(tier, [entry_of(info) for info in infos], now, scan_id, stamps)

    def write_listed(
        self,
        tier: str,
        entries: Sequence[Entry],
        now: datetime,
        scan_id: int | None = None,
        stamps: Mapping[str, Stamps] | None = None,
        new: Collection[str] | None = None,
    ) -> None:
        """Record listed objects, new or changed; a changed object loses its known checksum.

        A known object whose bytes are unchanged (same size and ETag) keeps its instants:
        an object store's Last-Modified of a copy is when it was copied, not when the
        object was created or modified (DESIGN I9). A new or changed object (a rewrite is
        a new object, as S3 lifecycle counts it) takes them from ``stamps`` where given
        (what a copy carries in its metadata), else from the listing. Rows are written in
        one statement (on PostgreSQL through ``COPY``). Keys in ``new`` were not in the
        inventory as the scan read it: they are inserted, unless shelflife wrote them
        meanwhile."""
        if not entries:
            return
        stamp = to_micros(now)
        carried = stamps or {}
        changed: list[tuple[Any, ...]] = []
        fresh: list[tuple[Any, ...]] = []
        if len({entry[0] for entry in entries}) != len(entries):
            # a key twice in one batch (a listing that repeated itself): the last one
            # stands, as it would row by row, and one statement cannot write a key twice
            entries = list({entry[0]: entry for entry in entries}.values())
        for entry in entries:
            key, size, etag, modified, arrived = entry
            known = carried.get(key)
            if known is not None:
                written = to_micros(known.modified)
                created = to_micros(known.created)
            else:
                written = created = modified
            row = (
                tier,
                key,
                size,
                None,  # checksum: unknown until shelflife reads the bytes
                etag,
                written,
                stamp,
                stamp,
                scan_id,
                "present",
                created,
                modified if arrived is None else arrived,
            )
            (fresh if new is not None and key in new else changed).append(row)

        def upsert(insert: Any) -> Any:
            excluded = insert.excluded
            unchanged = (objects.c.size == excluded.size) & (
                func.coalesce(objects.c.etag, "") == func.coalesce(excluded.etag, "")
            )
            same_version = unchanged & objects.c.etag.is_not(None)
            return insert.on_conflict_do_update(
                index_elements=[objects.c.tier, objects.c.key],
                set_={
                    "size": excluded.size,
                    "etag": excluded.etag,
                    **{
                        name: case((same_version, objects.c[name]), else_=excluded[name])
                        for name in ("modified_at", "created_at", "arrived_at")
                    },
                    "last_seen_at": excluded.last_seen_at,
                    "scan_id": excluded.scan_id,
                    "checksum": case((unchanged, objects.c.checksum), else_=None),
                },
            )

        def insert_new(insert: Any) -> Any:
            # Written meanwhile by shelflife itself (an upload the inventory read missed):
            # that row knows more than the listing (its checksum, its instants).
            return insert.on_conflict_do_nothing(index_elements=[objects.c.tier, objects.c.key])

        self._insert()  # the dialect is one the catalog supports
        with self._begin() as conn:
            bulk_upsert(conn, objects, changed, _LISTED_COLUMNS, upsert)
            bulk_upsert(conn, objects, fresh, _LISTED_COLUMNS, insert_new)

    # -- the index of objects by age during a first load ------------------------------
    #
    # Rows of a first scan arrive in key order, their ages in no order: kept up row by row,
    # the (tier, modified_at) index takes more than half of a large first load (every
    # batch touches pages all over it). Built once at the end it costs a sort. Only the
    # index is set aside, never data: a query that would use it meanwhile reads the table.

    def inventory_empty(self) -> bool:
        """Whether the inventory holds no object of any tier (a first load)."""
        with self._connect() as conn:
            return conn.execute(select(objects.c.id).limit(1)).first() is None

    def set_aside_age_index(self) -> None:
        """Drop the index of objects by age for a bulk load (:meth:`restore_age_index`
        builds it again; a scan does so when it ends and when it begins)."""
        with self._begin() as conn:
            _AGE_INDEX.drop(conn, checkfirst=True)

    def restore_age_index(self) -> bool:
        """Build the index of objects by age if it is missing (set aside by a load that
        ended, or that was killed); whether it had to be built."""
        with self._begin() as conn:
            if inspect(conn).has_index("objects", _AGE_INDEX.name):
                return False
            sqlite = self.dialect == "sqlite"
            if sqlite:
                # the build sorts every row: in temporary files, not in memory, so memory
                # stays flat whatever the size of the inventory
                conn.exec_driver_sql("PRAGMA temp_store=FILE")
            try:
                _AGE_INDEX.create(conn, checkfirst=True)
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA temp_store=MEMORY")
            return True

    # Inventory rows a scan reads at a time (one range of the index per page).
    scan_page = 20_000

    def listed_state(self, tier: str, *, page: int | None = None) -> Iterator[list[Listed]]:
        """The inventory of ``tier`` as a scan compares it with a listing: (key, size,
        etag, modified µs) in key order (byte order), a page at a time (keyset: each page
        is a range of the (tier, key) index, and no transaction stays open)."""
        page = page or self.scan_page
        quoted = self.engine.dialect.identifier_preparer.quote
        marker = "?" if self.dialect == "sqlite" else "%s"
        sql = (
            f"SELECT {quoted('key')}, size, etag, modified_at FROM objects "
            f"WHERE tier = {marker} AND {quoted('key')} > {marker} "
            f"ORDER BY {quoted('key')} LIMIT {int(page)}"
        )
        after = ""
        while True:
            with self._connect() as conn:
                in_key_order(conn)  # a page is a range of the (tier, key) index
                cursor = conn.connection.driver_connection.cursor()
                try:
                    cursor.execute(sql, (tier, after))
                    rows: list[Listed] = cursor.fetchall()
                finally:
                    cursor.close()
            if rows:
                yield rows
            if len(rows) < page:
                return
            after = rows[-1][0]

    def mark_vanished(self, tier: str, keys: Sequence[str], scan_id: int) -> None:
        """Mark rows a scan by difference did not find in the listing; the scan deletes
        them once its listing completed in order (:meth:`finish_scan_by_difference`)."""
        if not keys:
            return
        statement = (
            update(objects)
            .where(objects.c.tier == bindparam("t"), objects.c.key == bindparam("k"))
            .values(scan_id=bindparam("s"))
        )
        with self._begin() as conn:
            bulk_execute(conn, statement, [{"t": tier, "k": key, "s": -scan_id} for key in keys])

    def finish_scan_by_difference(
        self,
        tier: str,
        scan_id: int,
        started_at: datetime,
        now: datetime,
        *,
        vanished: int,
        listed: TierTotals,
        written: int = 0,
    ) -> int:
        """Forget the rows :meth:`mark_vanished` marked in this scan, unless written since
        the scan began (an upload the listing passed before it existed); record the scan.
        Returns how many rows were forgotten.

        On PostgreSQL a scan that wrote or removed a tenth of the tier (a first scan, say)
        refreshes the table's statistics at once rather than when autovacuum comes by:
        planned on none, the next scan's pages of the inventory were each a sort of the
        rest of the tier (a rescan of 10^6 objects took 16 s instead of 5)."""
        removed = 0
        with self._begin() as conn:
            if vanished:
                removed = conn.execute(
                    delete(objects).where(
                        objects.c.tier == tier,
                        objects.c.scan_id == -scan_id,
                        objects.c.last_seen_at < started_at,
                    )
                ).rowcount
            _record_scan(conn, scan_id, now, listed, int(removed))
        touched = written + int(removed)
        if self.dialect == "postgresql" and touched >= 1000 and touched * 10 >= listed.objects:
            try:
                with self._begin() as conn:
                    conn.exec_driver_sql("ANALYZE objects")
            except SQLAlchemyError as exc:  # the scan is recorded; autovacuum will get to it
                LOG.warning("statistics of the objects table not refreshed: %s", exc)
        return int(removed)

    def known_keys(self, tier: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` the inventory of ``tier`` holds already."""
        found: set[str] = set()
        with self._connect() as conn:
            for start in range(0, len(keys), 500):
                found.update(
                    conn.execute(
                        select(objects.c.key).where(
                            objects.c.tier == tier, objects.c.key.in_(keys[start : start + 500])
                        )
                    ).scalars()
                )
        return found

    def finish_scan(self, tier: str, scan_id: int, started_at: datetime, now: datetime) -> int:
        """Forget objects this complete scan did not see; return how many were removed.

        Rows written after the scan began (uploads during the scan) are kept even if the
        listing passed their key before they existed.
        """
        with self._begin() as conn:
            removed = conn.execute(
                delete(objects).where(
                    objects.c.tier == tier,
                    func.coalesce(objects.c.scan_id, -1) != scan_id,
                    objects.c.last_seen_at < started_at,
                )
            ).rowcount
            _record_scan(conn, scan_id, now, self._totals(conn, tier), int(removed))
        return int(removed)

    def fail_scan(self, scan_id: int, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(
                update(scans).where(scans.c.id == scan_id).values(finished_at=now, status="failed")
            )

    def record_put(
        self,
        tier: str,
        key: str,
        *,
        size: int,
        checksum: str | None,
        etag: str | None,
        now: datetime,
        stamps: Stamps | None = None,
    ) -> None:
        """Record an object shelflife itself has just written."""
        self.record_puts(
            tier, [(key, size, checksum, etag)], now, None if stamps is None else {key: stamps}
        )

    def record_puts(
        self,
        tier: str,
        written: Sequence[tuple[str, int, str | None, str | None]],
        now: datetime,
        stamps: Mapping[str, Stamps] | None = None,
    ) -> None:
        """Record objects shelflife has just written, (key, size, checksum, etag) each, in one
        statement and one transaction.

        A copy brings its ``stamps`` (its source's created and modified instants); any
        other write is a new object, created and modified ``now``. Either way the object
        arrived on ``tier`` ``now``."""
        if not written:
            return
        stamp = to_micros(now)
        carried = stamps or {}
        rows = []
        for key, size, checksum, etag in written:
            known = carried.get(key)
            rows.append(
                {
                    "tier": tier,
                    "key": key,
                    "size": size,
                    "checksum": checksum,
                    "etag": etag,
                    "modified_at": to_micros(known.modified) if known else stamp,
                    "created_at": to_micros(known.created) if known else stamp,
                    "arrived_at": stamp,
                    "first_seen_at": stamp,
                    "last_seen_at": stamp,
                    "state": "present",
                }
            )
        with self._begin() as conn:
            bulk_execute(conn, self._put_upsert(), rows)

    def _put_upsert(self) -> Any:
        """Insert an object just written, or replace the row of the one it overwrote."""
        upsert = self._insert()
        excluded = upsert.excluded
        return upsert.on_conflict_do_update(
            index_elements=[objects.c.tier, objects.c.key],
            set_={
                "size": excluded.size,
                "checksum": excluded.checksum,
                "etag": excluded.etag,
                "modified_at": excluded.modified_at,
                "created_at": excluded.created_at,
                "arrived_at": excluded.arrived_at,
                "last_seen_at": excluded.last_seen_at,
            },
        )

    def record_uploads(
        self,
        leases_taken: Sequence[tuple[str, str, datetime]],
        written: Sequence[tuple[str, str, int, str | None, str | None]],
        now: datetime,
    ) -> None:
        """Take upload leases, (tier, key, expires_at) each, and record new objects,
        (tier, key, size, checksum, etag) each, created and arrived ``now``: one
        transaction, with statements compiled once per catalog (uploads committed in
        groups by the HTTP API, where compiling would cost more than the writes)."""
        if not leases_taken and not written:
            return
        stamp = to_micros(now)
        with self._begin() as conn:
            if leases_taken:
                sql, order = self._compiled_once(
                    conn, "lease", lambda: insert(leases), _LEASE_COLUMNS
                )
                lease_rows = [(t, k, to_micros(e)) for t, k, e in leases_taken]
                conn.exec_driver_sql(sql, _params(order, _LEASE_COLUMNS, lease_rows))
            if written:
                sql, order = self._compiled_once(conn, "put", self._put_upsert, _PUT_COLUMNS)
                put_rows = [
                    (t, k, size, checksum, etag, stamp, stamp, stamp, stamp, stamp, "present")
                    for t, k, size, checksum, etag in written
                ]
                conn.exec_driver_sql(sql, _params(order, _PUT_COLUMNS, put_rows))

    def _compiled_once(
        self, conn: Connection, name: str, build: Callable[[], Any], columns: tuple[str, ...]
    ) -> tuple[str, tuple[str, ...] | None]:
        """A statement's SQL and, for a positional driver, its parameters' order (built
        and compiled on first use only: building costs about as much as compiling)."""
        cache = self._compiled
        if name not in cache:
            compiled = build().compile(dialect=conn.dialect, column_keys=list(columns))
            if set(compiled.params) - set(columns):
                raise CatalogError(f"statement {name!r} binds values beyond its columns")
            order = tuple(compiled.positiontup) if compiled.positional else None
            cache[name] = (str(compiled), order)
        return cache[name]

    def set_tags(self, tier: str, key: str, tags: dict[str, str] | None) -> None:
        """Record an object's tags (what rules' ``filter.tags`` match)."""

        value = json.dumps(tags, sort_keys=True) if tags else None
        with self._begin() as conn:
            conn.execute(
                update(objects)
                .where(objects.c.tier == tier, objects.c.key == key)
                .values(tags=value)
            )

    def forget(self, tier: str, keys: Iterable[str]) -> None:
        """Remove objects from the inventory (after they were deleted from the store)."""
        batch = list(keys)
        with self._begin() as conn:
            for start in range(0, len(batch), 500):
                conn.execute(
                    delete(objects).where(
                        objects.c.tier == tier, objects.c.key.in_(batch[start : start + 500])
                    )
                )

    def touch(self, tier: str, keys: Iterable[str], now: datetime) -> None:
        """Record an access (for least-recently-used ordering)."""
        batch = list(keys)
        with self._begin() as conn:
            for start in range(0, len(batch), 500):
                conn.execute(
                    update(objects)
                    .where(objects.c.tier == tier, objects.c.key.in_(batch[start : start + 500]))
                    .values(last_accessed_at=now)
                )

    # -- inventory reads -----------------------------------------------------------------

    def get(self, tier: str, key: str) -> CatalogObject | None:
        with self._connect() as conn:
            row = conn.execute(
                select(*_OBJECT_COLUMNS).where(objects.c.tier == tier, objects.c.key == key)
            ).first()
        return CatalogObject(*row) if row else None

    def get_many(self, tier: str, keys: Iterable[str]) -> dict[str, CatalogObject]:
        """The inventory rows of ``keys`` on ``tier`` that exist, by key (500 per query)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CatalogObject] = {}
        with self._connect() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(
                    select(*_OBJECT_COLUMNS).where(
                        objects.c.tier == tier, objects.c.key.in_(wanted[start : start + 500])
                    )
                ).all()
                found.update((row.key, CatalogObject(*row)) for row in rows)
        return found

    def locate(self, key: str) -> list[CatalogObject]:
        """Every tier's inventory row for ``key``."""
        with self._connect() as conn:
            rows = conn.execute(select(*_OBJECT_COLUMNS).where(objects.c.key == key)).all()
        return [CatalogObject(*row) for row in rows]

    def present(self, locations: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (tier, key) pairs the inventory holds."""
        wanted = list(locations)
        found: set[tuple[str, str]] = set()
        by_tier: dict[str, list[str]] = {}
        for tier, key in wanted:
            by_tier.setdefault(tier, []).append(key)
        with self._connect() as conn:
            for tier, keys in by_tier.items():
                for start in range(0, len(keys), 500):
                    rows = conn.execute(
                        select(objects.c.key).where(
                            objects.c.tier == tier, objects.c.key.in_(keys[start : start + 500])
                        )
                    ).scalars()
                    found.update((tier, key) for key in rows)
        return found

    def iter_objects(
        self, tier: str, prefix: str = "", *, batch_size: int = 5000
    ) -> Iterator[CatalogObject]:
        """Stream a tier's inventory in key order, in bounded batches (keyset pagination)."""
        after = None
        while True:
            query = select(*_OBJECT_COLUMNS).where(objects.c.tier == tier)
            if prefix:
                query = query.where(objects.c.key >= prefix, objects.c.key < prefix + "\U0010ffff")
            if after is not None:
                query = query.where(objects.c.key > after)
            with self._connect() as conn:
                rows = conn.execute(query.order_by(objects.c.key).limit(batch_size)).all()
            for row in rows:
                yield CatalogObject(*row)
            if len(rows) < batch_size:
                return
            after = rows[-1].key

    def totals(self) -> dict[str, TierTotals]:
        """Objects and bytes per tier, from the inventory."""
        with self._connect() as conn:
            rows = conn.execute(
                select(
                    objects.c.tier, func.count(), func.coalesce(func.sum(objects.c.size), 0)
                ).group_by(objects.c.tier)
            ).all()
        return {tier: TierTotals(int(count), int(size)) for tier, count, size in rows}

    def last_scan(self, tier: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = (
                conn.execute(
                    select(scans)
                    .where(scans.c.tier == tier, scans.c.status == "ok")
                    .order_by(scans.c.started_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    # -- helpers -------------------------------------------------------------------------

    def _totals(self, conn: Connection, tier: str) -> TierTotals:
        count, size = conn.execute(
            select(func.count(), func.coalesce(func.sum(objects.c.size), 0)).where(
                objects.c.tier == tier
            )
        ).one()
        return TierTotals(int(count), int(size))

    def _insert(self) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(objects)
        if self.dialect == "sqlite":
            return sqlite.insert(objects)
        raise CatalogError(
            f"the catalog does not support {self.dialect}",
            hint="use SQLite or PostgreSQL for the catalog",
        )

    def _begin(self) -> Any:
        return _Guard(self.engine, begin=True)

    def _connect(self) -> Any:
        return _Guard(self.engine, begin=False)


_AGE_INDEX = next(index for index in objects.indexes if index.name == "ix_objects_tier_modified")

# In the table's order, which is the order of an insert's parameters: the rows then go to
# the driver as they are built (see schema.bulk_execute).
_LISTED_COLUMNS = (
    "tier",
    "key",
    "size",
    "checksum",
    "etag",
    "modified_at",
    "first_seen_at",
    "last_seen_at",
    "scan_id",
    "state",
    "created_at",
    "arrived_at",
)

_OBJECT_COLUMNS = (
    objects.c.tier,
    objects.c.key,
    objects.c.size,
    objects.c.checksum,
    objects.c.etag,
    objects.c.modified_at,
    objects.c.first_seen_at,
    objects.c.last_accessed_at,
    objects.c.state,
    objects.c.tags,
    objects.c.created_at,
    objects.c.arrived_at,
)


def _record_scan(
    conn: Connection, scan_id: int, now: datetime, totals: TierTotals, removed: int
) -> None:
    conn.execute(
        update(scans)
        .where(scans.c.id == scan_id)
        .values(
            finished_at=now,
            status="ok",
            objects=totals.objects,
            bytes=totals.bytes,
            removed=removed,
        )
    )


_LEASE_COLUMNS = ("tier", "key", "expires_at")
_PUT_COLUMNS = (
    "tier",
    "key",
    "size",
    "checksum",
    "etag",
    "modified_at",
    "created_at",
    "arrived_at",
    "first_seen_at",
    "last_seen_at",
    "state",
)


def _params(
    order: tuple[str, ...] | None, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> Any:
    """Rows of ``columns`` as the driver takes them: tuples in the statement's order for a
    positional driver (SQLite), mappings for a named one (psycopg)."""
    if order is None:
        return [dict(zip(columns, row, strict=True)) for row in rows]
    if order == columns:
        return rows
    position = [columns.index(name) for name in order]
    return [tuple(row[i] for i in position) for row in rows]


class _Guard:
    """A connection context that turns driver errors into CatalogError."""

    def __init__(self, engine: Engine, *, begin: bool) -> None:
        self.engine = engine
        self.begin = begin
        self._context: Any = None

    def __enter__(self) -> Connection:
        try:
            self._context = self.engine.begin() if self.begin else self.engine.connect()
            return self._context.__enter__()  # type: ignore[no-any-return]
        except OperationalError as exc:
            raise _unreachable(self.engine, exc) from None

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._context.__exit__(*exc_info)
        except OperationalError as exc:
            raise _unreachable(self.engine, exc) from None


def create_catalog_engine(url: str) -> Engine:
    """An engine with the settings the catalog relies on (WAL and busy timeout on SQLite)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # not echoed: an unparsable URL may hold a password nothing can recognise
        raise ConfigError(
            "[catalog] url is not a database URL",
            hint="use sqlite:///data/shelflife.db or postgresql+psycopg://user@host/db",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(
                    f"cannot create the folder for {database}: {exc.strerror}"
                ) from None
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # 16 MiB per connection: a run holds a few (a streamed read, the plan's writes),
            # and a cache that grows with the catalog is memory that grows with it
            cursor.execute("PRAGMA cache_size=-16384")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        with needs(f"a {parsed.get_backend_name()} catalog"):
            return create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        # the URL as written (its password is masked by the error report: see shelflife.base.logs)
        raise ConfigError(
            f"[catalog] url {url!r} names no database driver {parsed.drivername!r}",
            hint="use sqlite:///data/shelflife.db or postgresql+psycopg://user@host/db",
        ) from None


def _unreachable(engine: Engine, exc: OperationalError) -> CatalogError:
    where = engine.url.render_as_string(hide_password=True)
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return CatalogError(
        f"cannot use the catalog at {where}: {detail}",
        hint="check [catalog] url and that the database server is running",
    )
