"""The Celery app: ``celery -A shelflife.celery worker -B``.

Configured from the shelflife configuration found the usual way (``$SHELFLIFE_CONFIG``,
then ``./shelflife.toml``, then the embedded default): ``[celery]`` gives the broker (Redis
or RabbitMQ) and the result backend, ``[schedule]`` the beat schedule (crontab in the
schedule's time zone).

Tasks:

- ``shelflife.run`` — the lifecycle run (recover, scan, plan, apply); with
  ``[executor] backend = "celery"`` its batches fan out to ``shelflife.execute_batch``;
- ``shelflife.refresh_stats`` — scan, re-read the references, store the figures;
- ``shelflife.execute_batch`` — one batch of a fanned-out run (idempotent, see
  :mod:`shelflife.engine.fanout`).

Tasks are acknowledged late and requeued when their worker dies, one at a time per
worker process (``prefetch_multiplier = 1``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Celery
from celery.schedules import crontab

from shelflife.config import Config, load_config
from shelflife.errors import ShelflifeError
from shelflife.model.actions import Action
from shelflife.service.dispatch import EXECUTE_BATCH, celery_settings, dispatcher_for
from shelflife.service.records import refresh_stats
from shelflife.service.shelf import Shelf

LOG = logging.getLogger("shelflife.celery")

app = Celery("shelflife")
_state: dict[str, Any] = {}


def beat_schedule(config: Config) -> dict[str, Any]:
    """``[schedule]`` as Celery beat entries (five-field cron expressions)."""
    entries = {"lifecycle": "shelflife.run", "stats": "shelflife.refresh_stats"}
    schedule: dict[str, Any] = {}
    for name, task in entries.items():
        expression = getattr(config.schedule, name)
        if not expression:
            continue
        fields = expression.split()
        if len(fields) != 5:
            LOG.warning("schedule %s %r: beat takes five-field cron expressions", name, expression)
            continue
        minute, hour, day, month, weekday = fields
        schedule[f"shelflife-{name}"] = {
            "task": task,
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day,
                month_of_year=month,
                day_of_week=weekday,
            ),
            "kwargs": {"trigger": "schedule"} if name == "lifecycle" else {},
        }
    return schedule


def configure(config: Config) -> Celery:
    """Point the app at ``config``'s broker, backend, queues and schedule."""
    if _state.get("config") is config:
        return app
    _state["config"] = config
    _state.pop("shelf", None)
    app.conf.update(celery_settings(config), beat_schedule=beat_schedule(config))
    return app


def shelf() -> Shelf:
    """This worker's shelf, opened once per process (batches run here, in process)."""
    if "shelf" not in _state:
        _state["shelf"] = Shelf(_state["config"], dispatcher=dispatcher_for(_state["config"]))
    current: Shelf = _state["shelf"]
    return current


@app.task(  # type: ignore[untyped-decorator]
    name="shelflife.run"
)
def run_task(rule: str | None = None, yes: bool = False, trigger: str = "celery") -> dict[str, Any]:
    """The lifecycle run; an expected refusal is a result, not a task failure."""
    try:
        return shelf().run(rule=rule, yes=yes, trigger=trigger).as_json()
    except ShelflifeError as exc:
        LOG.warning("shelflife.run: %s", exc.message)
        return {"run_id": None, "status": "refused", "reason": exc.message}


@app.task(  # type: ignore[untyped-decorator]
    name="shelflife.refresh_stats"
)
def refresh_stats_task() -> dict[str, Any]:
    current = shelf()
    current.scan()
    current.refresh_references()
    return refresh_stats(current.context)


@app.task(  # type: ignore[untyped-decorator]
    name=EXECUTE_BATCH
)
def execute_batch_task(run_id: str, plan_now: str, items: list[dict[str, Any]]) -> int:
    batch = [Action.from_json(item) for item in items]
    shelf().execute_batch(run_id, datetime.fromisoformat(plan_now), batch)
    return len(items)


configure(load_config(None))
