"""``shelflife listen``: release objects as soon as their rows go (PostgreSQL).

A trigger on each PostgreSQL reference table sends the old value on the channel
``shelflife_release`` when a row is deleted or its column changes. NOTIFY is delivered
only when the transaction commits, so a rolled-back delete releases nothing. Each value
is handed to :meth:`Shelf.release`, which deletes the object only if no row (in any
source), pin or lease still holds it.
"""

from __future__ import annotations

import hashlib
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from sqlalchemy import text

from shelflife.errors import ObjectNotFound, ShelflifeError, UsageError
from shelflife.references.sources import ReferenceSource

CHANNEL = "shelflife_release"
MAX_PAYLOAD = 7900  # bytes of old value a notification carries (PostgreSQL's limit: 8000)
log = logging.getLogger("shelflife.listen")


@dataclass
class ListenStats:
    notifications: int = 0
    released: int = 0
    kept: int = 0
    errors: int = 0


def trigger_name(source: ReferenceSource) -> str:
    digest = hashlib.sha1(source.label.encode()).hexdigest()[:10]
    return f"shelflife_release_{digest}"


def install_triggers(sources: list[ReferenceSource]) -> list[ReferenceSource]:
    """Create (or replace) the notify trigger on every PostgreSQL source; return them.

    The payload is ``N:value``: the source's position in the list, then the old value
    (an array as JSON). NOTIFY takes at most 8000 bytes: a longer old value sends ``N:``
    alone, so the application's statement never fails; its objects are left for the
    next ``gc``."""
    installed = []
    for position, source in enumerate(sources):
        if source.engine.dialect.name != "postgresql":
            continue
        name = trigger_name(source)
        column = source.config.column
        table = ".".join(f'"{part}"' for part in source.config.table.split("."))
        old = f'OLD."{column}"'
        payload = f"array_to_json({old})::text" if source.kind == "array" else f"{old}::text"
        function = f"""
            CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                payload text;
            BEGIN
                IF {old} IS NOT NULL AND (TG_OP = 'DELETE'
                        OR {old} IS DISTINCT FROM NEW."{column}") THEN
                    payload := {payload};
                    IF octet_length(payload) > {MAX_PAYLOAD} THEN
                        payload := '';
                    END IF;
                    PERFORM pg_notify('{CHANNEL}', '{position}:' || payload);
                END IF;
                RETURN NULL;
            END $$;
        """
        trigger = f"""
            DROP TRIGGER IF EXISTS {name} ON {table};
            CREATE TRIGGER {name} AFTER DELETE OR UPDATE OF "{column}" ON {table}
                FOR EACH ROW EXECUTE FUNCTION {name}();
        """
        with source.engine.begin() as conn:
            conn.execute(text(function))
            conn.execute(text(trigger))
        installed.append(source)
    return installed


def listen(
    sources: list[ReferenceSource],
    release: Callable[[str], bool],
    *,
    stop: Callable[[], bool] = lambda: False,
    poll_seconds: float = 1.0,
) -> ListenStats:
    """Install triggers, then release objects as notifications arrive, until ``stop()``."""
    installed = install_triggers(sources)
    if not installed:
        raise UsageError(
            "listen needs at least one reference source in a PostgreSQL database",
            hint="declare one under [[references]], or run 'shelflife gc' on a schedule instead",
        )
    urls = {
        s.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        for s in installed
    }
    connections = [psycopg.connect(url, autocommit=True) for url in urls]
    stats = ListenStats()
    try:
        for conn in connections:
            conn.execute(f"LISTEN {CHANNEL}")
        log.info("listening on %d database(s) for released references", len(connections))
        while not stop():
            ready, _, _ = select.select(connections, [], [], poll_seconds)
            for conn in ready:
                for notice in conn.notifies(timeout=0, stop_after=1000):
                    stats.notifications += 1
                    for value in released_values(sources, notice.payload):
                        _handle(value, release, stats)
    finally:
        for conn in connections:
            conn.close()
    return stats


def released_values(sources: list[ReferenceSource], payload: str) -> list[str]:
    """The reference strings an old value (``N:value``) held, read by its source's kind."""
    position, colon, value = payload.partition(":")
    if not colon or not position.isdigit() or int(position) >= len(sources):
        return [payload]  # a trigger from before positions were sent: one whole value
    if not value:
        log.info("a released value was too long to send; the next gc collects its objects")
        return []
    reader = sources[int(position)].reader
    return list(dict.fromkeys(ref.text for ref in reader.references(value) if ref.locations))


def _handle(value: str, release: Callable[[str], bool], stats: ListenStats) -> None:
    started = time.monotonic()
    try:
        released = release(value)
    except ObjectNotFound:
        stats.kept += 1
        log.info("%s is already gone", value)
        return
    except ShelflifeError as exc:
        stats.errors += 1
        log.warning("could not release %s: %s", value, exc.message)
        return
    if released:
        stats.released += 1
        log.info("released %s in %.0f ms", value, (time.monotonic() - started) * 1000)
    else:
        stats.kept += 1
        log.info("kept %s: still referenced, pinned or leased", value)
