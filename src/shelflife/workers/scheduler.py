"""The embedded scheduler's jobs: what ``shelflife daemon`` runs when an entry is due
(the timing, claiming and loop are :mod:`shelflife.service.schedule`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shelflife.service.records import refresh_stats
from shelflife.service.schedule import Scheduler, ScheduleState
from shelflife.service.shelf import Shelf

__all__ = ["ScheduleState", "Scheduler", "shelf_jobs"]


def shelf_jobs(shelf: Shelf) -> dict[str, Callable[[], Any]]:
    """What the entries do: ``lifecycle`` is ``shelflife run``, ``stats`` rescans every
    tier, re-reads the references and stores the figures /metrics serves."""

    def lifecycle() -> None:
        shelf.run(trigger="schedule")

    def stats() -> None:
        shelf.scan()
        shelf.refresh_references()
        refresh_stats(shelf.context)

    return {"lifecycle": lifecycle, "stats": stats}
