"""The Celery app under the name deployments use: ``celery -A shelflife.celery worker -B``.

The app and its tasks live in :mod:`shelflife.workers.celery`.
"""

from shelflife.workers.celery import (
    app,
    beat_schedule,
    configure,
    execute_batch_task,
    refresh_stats_task,
    run_task,
)

__all__ = [
    "app",
    "beat_schedule",
    "configure",
    "execute_batch_task",
    "refresh_stats_task",
    "run_task",
]
