"""The ``STORAGE_*`` environment's references: the original service's columns, declared
when the shelf opens if they exist in the application database.

The original storage service rewrote ``video_jobs.output_path``,
``nexus_jobs.output_path`` and ``scheduled_posts.video_path`` when it moved an output.
With ``DATABASE_URL`` (or ``STORAGE_DATABASE_URL``) set, each of these columns that exists
becomes a reference source, so a migration rewrites its rows (DESIGN I2). A table that is
not there has no rows to rewrite and is left out, as long as one of the three is found.
A database that cannot be reached, a SQLite file that is not there (never created by
asking), or a database where none of the three is found (another database, a relative
SQLite path read from another working directory, tables in a schema off the search path)
keeps all three declared: a run then stops on the unreadable sources rather than move
files whose rows it could not rewrite (a missing source would mean none are rewritten).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from sqlalchemy import inspect, make_url
from sqlalchemy.exc import SQLAlchemyError

from shelflife.config.model import Config, ReferenceConfig
from shelflife.errors import MissingExtraError
from shelflife.references.sources import application_engine, database_url, sqlite_file

LOG = logging.getLogger("shelflife")
CONNECT_TIMEOUT = 10  # seconds
_TIMED = ("postgresql", "mysql", "mariadb")  # the drivers that take connect_timeout


@dataclass(frozen=True, slots=True)
class EnvironmentReferences:
    """What the check of the original columns found when the shelf opened."""

    database: str
    found: tuple[str, ...] = ()  # "table.column", declared
    missing: dict[str, str] = field(default_factory=dict)  # "table.column" → why not
    unreachable: str | None = None  # why the database could not be asked (all declared)

    @property
    def none_found(self) -> bool:
        """The database answered and holds none of the columns: all are declared, as
        when it cannot be reached (it is likely not the application's database)."""
        return self.unreachable is None and not self.found


def declare_found_references(config: Config) -> tuple[Config, EnvironmentReferences | None]:
    """``config`` with the environment's candidate columns that exist declared as
    references (all of them if the database cannot be reached or holds none of them),
    and what was found; a configuration with no candidates is returned unchanged, with
    ``None``."""
    environment = config.environment
    if environment is None or not environment.candidate_references:
        return config, None
    candidates = environment.candidate_references
    name = candidates[0].database
    try:
        missing = _missing_columns(config.databases[name].url.get_secret_value(), candidates)
    except (SQLAlchemyError, MissingExtraError, ImportError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        LOG.warning(
            "database %s (DATABASE_URL) cannot be reached (%s): its columns %s stay "
            "declared, and runs stop until it can",
            name,
            reason,
            ", ".join(_label(ref) for ref in candidates),
        )
        report = EnvironmentReferences(name, unreachable=reason)
        return _with(config, candidates), report
    declared = tuple(ref for ref in candidates if _label(ref) not in missing)
    if not declared:
        LOG.warning(
            "database %s (DATABASE_URL) holds none of the original columns (%s): all stay "
            "declared, and runs that move or delete stop until DATABASE_URL names the "
            "database holding them",
            name,
            "; ".join(f"{label}: {why}" for label, why in missing.items()),
        )
        return _with(config, candidates), EnvironmentReferences(name, (), missing)
    if missing:
        LOG.info(
            "not declared as references (not in database %s): %s",
            name,
            ", ".join(f"{label} ({why})" for label, why in missing.items()),
        )
    report = EnvironmentReferences(name, tuple(_label(ref) for ref in declared), missing)
    return _with(config, declared), report


def _missing_columns(url: str, candidates: tuple[ReferenceConfig, ...]) -> dict[str, str]:
    """``table.column`` → why it is missing, for each candidate that is not there."""
    from shelflife.base.extras import needs

    target = database_url(url)
    backend = make_url(target).get_backend_name()
    path = sqlite_file(target)
    if path is not None and not os.path.isfile(path):
        # asking would create an empty database in the application's space
        where = path if os.path.isabs(path) else f"{path} (from {os.getcwd()})"
        raise ValueError(f"no SQLite database file {where}")
    # a server that does not answer must not hold every command at start-up
    connect_args = {"connect_timeout": CONNECT_TIMEOUT} if backend in _TIMED else {}
    with needs("DATABASE_URL"):
        engine = application_engine(url, read_only=True, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            missing: dict[str, str] = {}
            for ref in candidates:
                if not inspector.has_table(ref.table):
                    missing[_label(ref)] = f"no table {ref.table}"
                    continue
                columns = {column["name"] for column in inspector.get_columns(ref.table)}
                if ref.column not in columns:
                    missing[_label(ref)] = f"table {ref.table} has no column {ref.column}"
            return missing
    finally:
        engine.dispose()


def _with(config: Config, references: tuple[ReferenceConfig, ...]) -> Config:
    return config.model_copy(update={"references": (*config.references, *references)})


def _label(ref: ReferenceConfig) -> str:
    return f"{ref.table}.{ref.column}"
