"""The embedded scheduler: ``[schedule]`` entries run by ``shelflife daemon``.

- Cron expressions (five fields, or six with seconds as the sixth, as croniter reads
  them) are evaluated in ``[schedule] timezone`` with croniter, so "0 3 * * *" is 03:00 local time
  on both sides of a DST change. A wall-clock time fires once: when clocks go back, the
  repeated hour does not fire a second time; when they go forward, a time inside the gap
  fires at the end of the gap.
- Each entry's latest slot is claimed in the catalog (``schedule_state``) with a
  conditional UPDATE before it runs: two daemons on one catalog run a slot once, and a
  daemon back from downtime runs a missed entry once, not once per missed slot.
- A daemon that starts with no state for an entry starts counting from now: the first
  run is at the next slot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import Engine, insert, select, update

from shelflife.base.units import utcnow
from shelflife.catalog.catalog import _Guard
from shelflife.catalog.history import History
from shelflife.catalog.schema import schedule_state
from shelflife.config.model import ScheduleConfig
from shelflife.engine.context import Context
from shelflife.errors import ShelflifeError

LOG = logging.getLogger("shelflife.scheduler")
OVERDUE_GRACE = timedelta(hours=1)  # how long after a due slot a missing success is news


def fire_times(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Instants (UTC) at which ``expression`` fires in ``timezone``, strictly after
    ``after``; a wall-clock time that repeats when clocks go back fires once."""
    zone = ZoneInfo(timezone)
    local = after.astimezone(zone)
    previous = croniter(expression, local).get_prev(datetime).replace(tzinfo=None)
    times = croniter(expression, local)
    while True:
        moment = times.get_next(datetime)
        wall = moment.replace(tzinfo=None)
        if wall <= previous:
            continue  # the hour that repeats after DST ends
        previous = wall
        yield moment.astimezone(UTC)


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    return next(fire_times(expression, timezone, after))


def previous_fire(expression: str, timezone: str, at: datetime) -> datetime:
    """The latest instant at or before ``at`` at which ``expression`` fires."""
    zone = ZoneInfo(timezone)
    local = at.astimezone(zone)
    moment = croniter(expression, local + timedelta(microseconds=1)).get_prev(datetime)
    return moment.astimezone(UTC)


def entries(config: ScheduleConfig) -> dict[str, str]:
    """The enabled entries: name → cron expression."""
    found = {"lifecycle": config.lifecycle, "stats": config.stats}
    return {name: expression for name, expression in found.items() if expression}


class ScheduleState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def last_due(self, name: str) -> datetime | None:
        with _Guard(self.engine, begin=False) as conn:
            value = conn.execute(
                select(schedule_state.c.last_due_at).where(schedule_state.c.name == name)
            ).scalar()
        return value

    def claim(self, name: str, due: datetime) -> bool:
        """Take the slot ``due`` for ``name``; False when it (or a later one) was taken."""
        with _Guard(self.engine, begin=True) as conn:
            result = conn.execute(
                update(schedule_state)
                .where(schedule_state.c.name == name, schedule_state.c.last_due_at < due)
                .values(last_due_at=due)
            )
            if result.rowcount:
                return True
            exists = conn.execute(
                select(schedule_state.c.name).where(schedule_state.c.name == name)
            ).first()
            if exists:
                return False
            conn.execute(insert(schedule_state).values(name=name, last_due_at=due))
            return True

    def start_counting(self, name: str, due: datetime) -> None:
        """Record ``due`` as taken without running it (a first start)."""
        if self.last_due(name) is None:
            self.claim(name, due)


@dataclass
class Scheduler:
    """Runs ``jobs`` (entry name → callable) when their entries are due."""

    config: ScheduleConfig
    state: ScheduleState
    jobs: dict[str, Callable[[], Any]]
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        self.entries = {name: e for name, e in entries(self.config).items() if name in self.jobs}

    def begin(self) -> None:
        now = self.clock()
        for name, expression in self.entries.items():
            self.state.start_counting(name, previous_fire(expression, self.config.timezone, now))

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        found = []
        for name, expression in self.entries.items():
            slot = previous_fire(expression, self.config.timezone, now)
            last = self.state.last_due(name)
            if last is None or last < slot:
                found.append((name, slot))
        return found

    def run_pending(self) -> list[str]:
        """Run each due entry once (however many of its slots were missed)."""
        ran = []
        for name, slot in self.due(self.clock()):
            if not self.state.claim(name, slot):
                continue  # another daemon took it
            LOG.info("running %s (due %s)", name, slot.isoformat())
            try:
                self.jobs[name]()
            except ShelflifeError as exc:
                LOG.warning("%s failed: %s", name, exc.message)
            except Exception:
                LOG.exception("%s failed", name)
            ran.append(name)
        return ran

    def next_due(self) -> datetime | None:
        now = self.clock()
        times = [
            next_fire(expression, self.config.timezone, now) for expression in self.entries.values()
        ]
        return min(times) if times else None

    def loop(self, stop: threading.Event) -> None:
        self.begin()
        while not stop.is_set():
            self.run_pending()
            upcoming = self.next_due()
            if upcoming is None:
                return
            wait = (upcoming - self.clock()).total_seconds()
            stop.wait(min(max(wait, 0.05), 60.0))  # wake at least once a minute


def schedule_status(context: Context, now: datetime | None = None) -> dict[str, Any]:
    """Is it running? The last successful lifecycle run, the next one due, and whether
    the last success is older than the schedule allows."""
    now = now or utcnow()
    config = context.config.schedule
    last = History(context.catalog.engine).last_success(command="run")
    body: dict[str, Any] = {
        "timezone": config.timezone,
        "lifecycle": config.lifecycle,
        "last_success": None if last is None else last.isoformat(),
        "next_due": None,
        "overdue": False,
        "message": None,
    }
    if not config.lifecycle:
        body["message"] = "no lifecycle schedule: runs happen only when started"
        return body
    body["next_due"] = next_fire(config.lifecycle, config.timezone, now).isoformat()
    slot = previous_fire(config.lifecycle, config.timezone, now)
    if now - slot > OVERDUE_GRACE and (last is None or last < slot):
        body["overdue"] = True
        since = "never" if last is None else f"last at {last:%Y-%m-%d %H:%M} UTC"
        body["message"] = (
            f"the lifecycle run due at {slot:%Y-%m-%d %H:%M} UTC has not succeeded "
            f"({since}); is 'shelflife daemon' (or Celery beat) running?"
        )
    return body
