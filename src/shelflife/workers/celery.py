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
    settings = config.celery
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.results,
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout.total_seconds()
        },
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout.total_seconds()
        },
        timezone=config.schedule.timezone,
        enable_utc=True,
        beat_schedule=beat_schedule(config),
        worker_hijack_root_logger=False,
    )
    return app


def shelf() -> Any:
    """This worker's shelf, opened once per process."""
    from shelflife.service.shelf import Shelf

    if "shelf" not in _state:
        _state["shelf"] = Shelf(_state["config"])
    return _state["shelf"]


@app.task(  # type: ignore[untyped-decorator]
    name="shelflife.run"
)
def run_task(rule: str | None = None, yes: bool = False, trigger: str = "celery") -> dict[str, Any]:
    """The lifecycle run; an expected refusal is a result, not a task failure."""
    try:
        return shelf().run(rule=rule, yes=yes, trigger=trigger).as_json()  # type: ignore[no-any-return]
    except ShelflifeError as exc:
        LOG.warning("shelflife.run: %s", exc.message)
        return {"run_id": None, "status": "refused", "reason": exc.message}


@app.task(  # type: ignore[untyped-decorator]
    name="shelflife.refresh_stats"
)
def refresh_stats_task() -> dict[str, Any]:
    from shelflife.service import metrics

    current = shelf()
    current.scan()
    current.refresh_references()
    return metrics.refresh_stats(current)


@app.task(  # type: ignore[untyped-decorator]
    name="shelflife.execute_batch"
)
def execute_batch_task(run_id: str, plan_now: str, items: list[dict[str, Any]]) -> int:
    from shelflife.engine.fanout import batch_payload, execute_batch

    execute_batch(shelf(), run_id, datetime.fromisoformat(plan_now), batch_payload(items))
    return len(items)


configure(load_config(None))
