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

Under the original services' names (docs/migrating.md), aliases of the same work:
``storage.manage_lifecycle`` (the storage service's daily task: enforce the threshold,
then the 90-day cloud retention), ``tasks.minio_lifecycle.cleanup_orphan_files``
(``dry_run``, ``bucket``: ``gc`` in the MinIO clean-up's result shape) and
``tasks.minio_lifecycle.get_storage_stats`` (``shelflife.refresh_stats`` with the
``buckets`` view). With ``[celery] compat_names = true`` the beat entries are named
``minio-lifecycle-cleanup`` and ``minio-storage-stats``.

Tasks are acknowledged late and requeued when their worker dies, one at a time per
worker process (``prefetch_multiplier = 1``); a batch whose broker connection breaks is
ended and delivered again. A batch that meets the catalog away (its PostgreSQL restarting,
say) is tried again, 1 s, 2 s, … 5 s later, for about a minute
(:data:`CATALOG_RETRIES`): it is idempotent, so the next try settles what this one left.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Celery, Task
from celery.schedules import crontab
from sqlalchemy.exc import InterfaceError, OperationalError

from shelflife.config import Config, load_config
from shelflife.errors import CatalogError, ShelflifeError
from shelflife.model.actions import Action
from shelflife.service.dispatch import EXECUTE_BATCH, celery_settings, dispatcher_for
from shelflife.service.originals import (
    buckets_view,
    cleanup_orphan_files,
    manage_lifecycle,
)
from shelflife.service.records import refresh_stats
from shelflife.service.shelf import Shelf

LOG = logging.getLogger("shelflife.celery")

app = Celery("shelflife")
_state: dict[str, Any] = {}
# [celery] compat_names: the MinIO clean-up's beat entry names for the two schedules
COMPAT_ENTRIES = {"lifecycle": "minio-lifecycle-cleanup", "stats": "minio-storage-stats"}
CATALOG_RETRIES = 14  # tries of a batch that met the catalog away: about a minute in all


def beat_schedule(config: Config) -> dict[str, Any]:
    """``[schedule]`` as Celery beat entries (five-field cron expressions)."""
    entries = {"lifecycle": "shelflife.run", "stats": "shelflife.refresh_stats"}
    names = COMPAT_ENTRIES if config.celery.compat_names else {}
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
        schedule[names.get(name, f"shelflife-{name}")] = {
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
    return _refresh_stats()


def _refresh_stats() -> dict[str, Any]:
    current = shelf()
    current.scan()
    current.refresh_references()
    return refresh_stats(current.context)


@app.task(  # type: ignore[untyped-decorator]
    name="storage.manage_lifecycle"
)
def manage_lifecycle_task() -> dict[str, Any]:
    """The storage service's daily task: migrate down to the threshold, then expire
    cloud objects older than 90 days; each step's run, or its refusal."""
    current = shelf()
    return manage_lifecycle(current.context, current.dispatcher, trigger="celery")


@app.task(  # type: ignore[untyped-decorator]
    name="tasks.minio_lifecycle.cleanup_orphan_files"
)
def cleanup_orphan_files_task(dry_run: bool = False, bucket: str | None = None) -> dict[str, Any]:
    """The MinIO clean-up's task: ``gc`` of a bucket's tiers (all with no bucket)."""
    current = shelf()
    try:
        return cleanup_orphan_files(
            current.context, current.dispatcher, dry_run=dry_run, bucket=bucket, trigger="celery"
        )
    except ShelflifeError as exc:
        LOG.warning("cleanup_orphan_files: %s", exc.message)
        return {"dry_run": dry_run, "status": "refused", "run_id": None, "reasons": [exc.message]}


@app.task(  # type: ignore[untyped-decorator]
    name="tasks.minio_lifecycle.get_storage_stats"
)
def get_storage_stats_task() -> dict[str, Any]:
    """``shelflife.refresh_stats`` with the MinIO clean-up's ``buckets`` view."""
    body = _refresh_stats()
    return {**body, "buckets": buckets_view(_state["config"], body)}


@app.task(  # type: ignore[untyped-decorator]
    name=EXECUTE_BATCH, bind=True, max_retries=CATALOG_RETRIES
)
def execute_batch_task(task: Task, run_id: str, plan_now: str, items: list[dict[str, Any]]) -> int:
    batch = [Action.from_json(item) for item in items]
    try:
        return shelf().execute_batch(run_id, datetime.fromisoformat(plan_now), batch)
    except (CatalogError, OperationalError, InterfaceError) as exc:  # the catalog is away
        message = exc.message if isinstance(exc, CatalogError) else str(exc).splitlines()[0]
        LOG.warning("batch of run %s: %s; trying it again", run_id, message)
        raise task.retry(exc=exc, countdown=min(task.request.retries + 1, 5)) from None


configure(load_config(None))
