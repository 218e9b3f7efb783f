"""The catalog's tables. Alembic migrations under ``migrations/`` create and evolve them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# Keys compare in byte order everywhere: PostgreSQL's default collation would not
# (S3 lists in UTF-8 byte order), and "C" also lets LIKE 'prefix%' use the index.
KeyType = String(1024).with_variant(String(1024, collation="C"), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; pass an aware UTC instant")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
)

refs = Table(
    "refs",
    metadata,
    Column("snapshot_id", Integer, nullable=False),
    Column("tier", String(64), nullable=False),
    Column("key", KeyType, nullable=False),
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

marks = Table(
    "marks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(128), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("evaluated_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # open | swept | refused
    Column("candidates", BigInteger, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("snapshot_id", Integer),
)

mark_items = Table(
    "mark_items",
    metadata,
    Column("mark_id", Integer, nullable=False),
    Column("key", KeyType, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    Column("etag", String(256)),
)
Index("ix_mark_items_mark_key", mark_items.c.mark_id, mark_items.c.key)

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
