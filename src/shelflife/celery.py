"""The Celery app under the name deployments use: ``celery -A shelflife.celery worker -B``.

The app and its tasks live in :mod:`shelflife.workers.celery`.
"""

from shelflife.workers.celery import app

__all__ = ["app"]
