"""``shelflife check``: is the configuration valid, and can every part be reached?

Each tier gets a probe object written, read back and deleted, so a read-only mount, a
folder owned by another user or a key without write permission shows up here rather
than in the middle of a migration.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, String, Text, column, create_engine, inspect, select, table, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.expression import ColumnClause

from shelflife.aio import run_sync
from shelflife.catalog.schema import metadata as catalog_metadata
from shelflife.config.model import Config
from shelflife.errors import ShelflifeError
from shelflife.locations import Locator
from shelflife.references import Databases, ReferenceSource
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.local import LocalStore

PROBE_PREFIX = ".shelflife-probe"
CATALOG_TABLES = frozenset(catalog_metadata.tables) | {"alembic_version"}


@dataclass(frozen=True, slots=True)
class CheckResult:
    component: str  # "config", "catalog", "tier", "database"
    name: str
    ok: bool
    message: str
    hint: str | None = None
    warning: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "name": self.name,
            "ok": self.ok,
            "warning": self.warning,
            "message": self.message,
            "hint": self.hint,
        }


def check_tier(name: str, open_store: Any) -> CheckResult:
    """Open a tier's store and write, read back and delete a probe object."""
    try:
        store: ObstoreStore = open_store(name)
    except ShelflifeError as exc:
        return CheckResult("tier", name, False, exc.message, exc.hint)
    if isinstance(store, LocalStore):
        problem = _local_permission_problem(store.root)
        if problem:
            return CheckResult("tier", name, False, problem, _OWNER_HINT)
    key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
    payload = b"shelflife probe " + key.encode()
    try:
        run_sync(store.put(key, payload))
        try:
            echoed = run_sync(store.get_bytes(key))
        finally:
            run_sync(store.delete(key))
    except ShelflifeError as exc:
        return CheckResult("tier", name, False, f"{store.location}: {exc.message}", exc.hint)
    if echoed != payload:
        return CheckResult(
            "tier",
            name,
            False,
            f"{store.location}: a probe object read back different bytes",
            "the store does not keep what it is given; do not use it until this is explained",
        )
    return CheckResult("tier", name, True, f"{store.location}: writable, readable, deletable")


def check_database(name: str, url: str) -> CheckResult:
    """Connect to an application database and run a trivial query."""
    try:
        engine = create_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        return CheckResult("database", name, False, f"invalid database url: {exc}")
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        return CheckResult(
            "database",
            name,
            False,
            f"cannot connect to {where}: {detail}",
            "check the url under [databases." + name + "] and that the server runs",
        )
    finally:
        engine.dispose()
    return CheckResult("database", name, True, f"{where}: reachable")


_OWNER_HINT = "give the user running shelflife write access to the folder (chown or chmod)"


def _local_permission_problem(root: Path) -> str | None:
    """Say plainly when a local tier's folder is not writable by this user."""
    if os.access(root, os.W_OK | os.X_OK):
        return None
    try:
        info = root.stat()
        owner = _user_name(info.st_uid)
    except OSError:
        return f"{root} is not writable"
    return (
        f"{root} is not writable by {_user_name(os.geteuid())}: "
        f"it is owned by {owner} with mode {info.st_mode & 0o777:o}"
    )


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return f"uid {uid}"


SAMPLE_ROWS = 50


def lint_references(config: Config, databases: Databases, locator: Locator) -> list[CheckResult]:
    """Warn about reference columns without an index, and undeclared columns that hold
    values spelled like a tier's locations (a table whose paths would never be migrated)."""
    results: list[CheckResult] = []
    declared = {(r.database, r.table, r.column) for r in config.references}
    for ref in config.references:
        source = ReferenceSource(ref, databases.engine(ref.database))
        try:
            rows = source.count()
        except ShelflifeError as exc:
            results.append(CheckResult("reference", source.label, False, exc.message, exc.hint))
            continue
        indexed = source.has_index()
        if indexed is False:
            results.append(
                CheckResult(
                    "reference",
                    source.label,
                    True,
                    f"{rows} rows; the column has no index: re-checks and rewrites scan the table",
                    f"CREATE INDEX ON {ref.table} ({ref.column})",
                    warning=True,
                )
            )
        else:
            results.append(CheckResult("reference", source.label, True, f"{rows} rows, indexed"))
    for name in config.databases:
        results += _undeclared_columns(name, databases.engine(name), declared, locator)
    return results


def _undeclared_columns(
    database: str, engine: Engine, declared: set[tuple[str, str, str]], locator: Locator
) -> list[CheckResult]:
    found = []
    try:
        inspector = inspect(engine)
        tables = inspector.get_table_names()
    except SQLAlchemyError:
        return []
    for table_name in tables:
        if table_name in CATALOG_TABLES:
            continue
        for info in inspector.get_columns(table_name):
            if (database, table_name, info["name"]) in declared:
                continue
            if not isinstance(info["type"], String | Text):
                continue
            sample = _sample(engine, table_name, info["name"])
            hits = [value for value in sample if locator.parse_specific(value) is not None]
            if hits:
                found.append(
                    CheckResult(
                        "reference",
                        f"{database}.{table_name}.{info['name']}",
                        True,
                        f"undeclared reference column: values such as {hits[0]!r} look like "
                        "locations on a tier, but no [[references]] entry names this column",
                        "declare it under [[references]] so its objects are migrated and protected",
                        warning=True,
                    )
                )
    return found


def _sample(engine: Engine, table_name: str, column_name: str) -> list[str]:
    column_ref: ColumnClause[Any] = column(column_name)
    query = (
        select(column_ref)
        .select_from(table(table_name, column_ref))
        .where(column_ref.is_not(None))
        .limit(SAMPLE_ROWS)
    )
    try:
        with engine.connect() as conn:
            return [str(value) for value in conn.execute(query).scalars()]
    except SQLAlchemyError:
        return []
