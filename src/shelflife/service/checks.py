"""``shelflife check``: is the configuration valid, and can every part be reached?

Each tier gets a probe object written, read back and deleted, so a read-only mount, a
folder owned by another user or a key without write permission shows up here rather
than in the middle of a migration.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from shelflife.base.aio import run_sync
from shelflife.base.extras import needs
from shelflife.catalog.catalog import _Guard
from shelflife.catalog.history import History
from shelflife.catalog.schema import plans, runs, scans, schedule_state
from shelflife.config.model import Config
from shelflife.engine.context import Context
from shelflife.engine.planning import unrewritten
from shelflife.engine.trust import CATALOG_TABLES
from shelflife.errors import MissingExtraError, ShelflifeError
from shelflife.model.locations import Location, Locator
from shelflife.references.sources import (
    Databases,
    application_engine,
    open_sources,
    undeclared_columns,
)
from shelflife.service.environment import EnvironmentReferences
from shelflife.service.schedule import OVERDUE_GRACE, next_fire, previous_fire
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.local import LocalStore

PROBE_PREFIX = ".shelflife-probe"


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
    if store.archive:
        return _check_archive_tier(name, store, key, payload)
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


def check_rewrites(config: Config) -> list[CheckResult]:
    """Tiers that migrate rules move objects off while no reference source is declared."""
    enabled = [rule for rule in config.rules if rule.enabled]
    results = []
    for text_ in unrewritten(config, enabled):
        label, _, message = text_.partition(": ")  # "tier NAME: ..."
        results.append(
            CheckResult(
                "tier",
                label.removeprefix("tier "),
                True,
                message,
                "declare the columns that hold object locations under [[references]]",
                warning=True,
            )
        )
    return results


def check_environment_references(found: EnvironmentReferences | None) -> list[CheckResult]:
    """Which of the storage service's columns the ``STORAGE_*`` environment declared as
    references when the shelf opened (DATABASE_URL): found, missing, or not asked."""
    if found is None:
        return []
    if found.unreachable is not None:
        return [
            CheckResult(
                "reference",
                found.database,
                False,
                f"the application database could not be asked which of the original "
                f"columns exist ({found.unreachable}): all are declared, and runs stop "
                "until it can be reached",
                "check DATABASE_URL (or STORAGE_DATABASE_URL) and that the server runs",
            )
        ]
    if found.none_found:
        return [
            CheckResult(
                "reference",
                found.database,
                False,
                "none of the original columns is in the application database ("
                + "; ".join(f"{label}: {why}" for label, why in found.missing.items())
                + "): all are declared, and runs that move or delete stop until it holds them",
                "point DATABASE_URL (or STORAGE_DATABASE_URL) at the database holding "
                "video_jobs, nexus_jobs or scheduled_posts (a relative SQLite path is read "
                "from the working directory; on PostgreSQL, tables outside the search path "
                "are not seen: add ?options=-csearch_path%3DSCHEMA), or use a config file "
                "with [[references]]",
            )
        ]
    message = f"original columns found and declared: {', '.join(found.found)}" + "".join(
        f"; {label} not declared ({why})" for label, why in found.missing.items()
    )
    return [CheckResult("reference", found.database, True, message)]


def _check_archive_tier(name: str, store: ObstoreStore, key: str, payload: bytes) -> CheckResult:
    """An archive class cannot be read back: write, ask the store's checksum, delete."""
    try:
        written = run_sync(store.put(key, payload))
        try:
            problem = run_sync(store.verify_unread(written))
        finally:
            run_sync(store.delete(key))
    except ShelflifeError as exc:
        return CheckResult("tier", name, False, f"{store.location}: {exc.message}", exc.hint)
    if problem:
        return CheckResult(
            "tier",
            name,
            False,
            f"{store.location}: a probe object cannot be verified ({problem})",
            "copies to this tier could not be verified; migrations to it would fail",
        )
    return CheckResult(
        "tier",
        name,
        True,
        f"{store.location}: writable, verified by the store's checksum (an archive class is "
        "not read back), deletable",
    )


def check_database(name: str, url: str) -> CheckResult:
    """Connect to an application database and run a trivial query."""
    try:
        with needs(f"[databases.{name}]"):
            engine = application_engine(url, read_only=True)  # a SQLite file is not made
    except MissingExtraError as exc:
        return CheckResult("database", name, False, exc.message, hint=exc.hint)
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


TRUST_SAMPLE = 100_000  # rows per source read for the spelling check


def lint_references(
    config: Config,
    databases: Databases,
    locator: Locator,
    exists: Callable[[Location], bool] = lambda location: False,
) -> list[CheckResult]:
    """Warn about reference columns without an index, sources whose spellings cannot be
    trusted (values naming a tier's place in an undeclared way, too many values matching
    no tier), tiers that share a spelling, and undeclared columns that hold references
    (whole values, strings inside JSON, substrings of free text)."""
    results: list[CheckResult] = []
    for text_, tiers in locator.shared_spellings():
        results.append(
            CheckResult(
                "reference",
                text_,
                True,
                f"tiers {', '.join(tiers)} share the spelling {text_!r}: a value in it names "
                "the key on each of them (each is protected; audit reports the value only "
                "when none holds it)",
                "give each tier its own ref_format if rows can tell them apart",
                warning=True,
            )
        )
    for source in open_sources(config, databases, locator):
        ref = source.config
        try:
            rows = source.count()
            report = source.new_report()
            read = 0
            for _ in source.iter_references(report):
                read = report.rows
                if read >= TRUST_SAMPLE:
                    break
        except ShelflifeError as exc:
            results.append(CheckResult("reference", source.label, False, exc.message, exc.hint))
            continue
        for tier, reason in sorted(report.distrusted(locator, list(config.tiers)).items()):
            results.append(
                CheckResult(
                    "reference",
                    source.label,
                    True,
                    f"tier {tier}: {reason}",
                    "until then, rules that remove objects from this tier are refused",
                    warning=True,
                )
            )
        trigram = source.substring_index_hint()
        indexed = source.has_index()
        if trigram is not None:
            results.append(
                CheckResult(
                    "reference",
                    source.label,
                    True,
                    f"{rows} rows, kind {ref.kind}: re-checks and rewrites search the column "
                    "by substring, a scan of the table per batch",
                    trigram,
                    warning=True,
                )
            )
        elif indexed is False and ref.kind in ("value", "array"):
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
            results.append(
                CheckResult("reference", source.label, True, f"{rows} rows, kind {ref.kind}")
            )
    for finding in undeclared_columns(
        config, databases, locator, exists, skip_tables=CATALOG_TABLES
    ):
        results.append(
            CheckResult(
                "reference",
                finding.label,
                True,
                f"undeclared reference column: values such as {finding.example[:120]!r} point "
                f"at objects of tier {', '.join(finding.tiers)}, but no [[references]] entry "
                "names this column; collecting orphans there is refused until it is declared",
                "declare it:\n" + finding.declaration() + "\nor, if it names no object, list it "
                "under [[ignore_columns]] with a reason",
                warning=True,
            )
        )
    return results


_DAEMON_HINT = "start 'shelflife daemon', or Celery beat with a worker"


def check_schedule(context: Context, now: datetime | None = None) -> CheckResult:
    """Is the lifecycle schedule kept? The last successful run and the next one due.

    A warning only once a slot that should have produced a success has passed (with
    the hour's grace) without one: a slot counts from the first thing this catalog saw
    shelflife do (a scan, a plan, a run, a daemon's start), so a fresh install is not
    told its run "has not succeeded" before it had a chance to."""
    from shelflife.base.units import utcnow

    now = now or utcnow()
    config = context.config.schedule
    if not config.lifecycle:
        return CheckResult(
            "schedule",
            "lifecycle",
            True,
            "no lifecycle schedule: runs happen only when started",
            warning=True,
        )
    last = History(context.catalog.engine).last_success(command="run")
    next_due = next_fire(config.lifecycle, config.timezone, now)
    since = _first_activity(context)
    shown = "never" if last is None else last.isoformat()
    message = f"last successful run {shown}; next due {next_due.isoformat()}"
    if since is None:
        return CheckResult(
            "schedule", "lifecycle", True, f"no lifecycle run yet; the first is due {next_due}"
        )
    expected = next_fire(config.lifecycle, config.timezone, since)
    slot = previous_fire(config.lifecycle, config.timezone, now - OVERDUE_GRACE)
    if slot >= expected and (last is None or last < slot):
        before = "never" if last is None else f"last at {last:%Y-%m-%d %H:%M} UTC"
        return CheckResult(
            "schedule",
            "lifecycle",
            True,
            f"the lifecycle run due at {slot:%Y-%m-%d %H:%M} UTC has not succeeded ({before}); "
            f"is 'shelflife daemon' (or Celery beat) running? ({message})",
            hint=_DAEMON_HINT,
            warning=True,
        )
    return CheckResult("schedule", "lifecycle", True, message)


def _first_activity(context: Context) -> datetime | None:
    """The first instant the catalog records shelflife at work: the earliest scan, plan
    or run, or the slot a daemon started counting from."""
    query = select(
        select(func.min(scans.c.started_at)).scalar_subquery(),
        select(func.min(plans.c.created_at)).scalar_subquery(),
        select(func.min(runs.c.started_at)).scalar_subquery(),
        select(schedule_state.c.last_due_at)
        .where(schedule_state.c.name == "lifecycle")
        .scalar_subquery(),
    )
    with _Guard(context.catalog.engine, begin=False) as conn:
        row = conn.execute(query).one()
    found = [moment for moment in row if moment is not None]
    return min(found) if found else None
