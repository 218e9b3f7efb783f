"""A thin facade with the names users of the older storage services know.

``StorageService.upload_file(path, filename)`` stores a file on the local tier,
``upload_to_cloud(path, filename)`` on the cloud tier, and ``get_file_url(filename)``
returns a working URL for wherever the file is today. ``StorageManager.enforce_threshold()``
runs the migrate rules (keep the local tier under its watermark);
``StorageManager.apply_retention_policy(days=90)`` expires cloud-tier objects older than
``days`` through the same plan and re-checks as ``shelflife expire`` (rows are treated as
each reference's ``on_expire`` says).
"""

from __future__ import annotations

from pathlib import Path

from shelflife.config import Config
from shelflife.errors import UsageError
from shelflife.service.shelf import Shelf


class StorageService:
    """Upload files and resolve their URLs through a shelf."""

    def __init__(self, shelf: Shelf | None = None, *, config: Config | str | Path | None = None):
        self.shelf = shelf or Shelf.from_config(config)

    def upload_file(self, path: str | Path, filename: str | None = None) -> str:
        """Store ``path`` on the local tier as ``filename``; return the row value to keep."""
        return self.shelf.put(path, filename, tier=self.shelf.config.default_tier).ref

    def upload_to_cloud(self, path: str | Path, filename: str | None = None) -> str:
        """Store ``path`` on the cloud tier (the next tier after local); return its row value."""
        return self.shelf.put(path, filename, tier=self._cloud_tier()).ref

    def get_file_url(self, filename: str) -> str:
        """A URL for a key or a row value, on whichever tier the file sits now."""
        return self.shelf.url(filename)

    def _cloud_tier(self) -> str:
        return _cloud_tier(self.shelf)


class StorageManager:
    """The lifecycle side of the older services."""

    RETENTION_DAYS = 90

    def __init__(self, shelf: Shelf | None = None, *, config: Config | str | Path | None = None):
        self.shelf = shelf or Shelf.from_config(config)

    def enforce_threshold(self) -> dict[str, object]:
        """Move the coldest objects off tiers above their high watermark; return the run."""
        return self.shelf.enforce().as_json()

    def apply_retention_policy(
        self, days: int | None = None, *, yes: bool = False
    ) -> dict[str, object]:
        """Expire objects on the cloud tier older than ``days`` (RETENTION_DAYS by default);
        return the run. Deletions above the executor's caps need ``yes=True``."""
        from datetime import timedelta

        from shelflife.config.model import RuleConfig

        days = self.RETENTION_DAYS if days is None else days
        if days < 1:
            raise UsageError(f"retention must be at least one day, not {days}")
        tier = _cloud_tier(self.shelf)
        rule = RuleConfig(
            id=f"retention-{days}d", tier=tier, action="expire", after=timedelta(days=days)
        )
        return self.shelf.run(command="expire", rules=[rule], trigger="python", yes=yes).as_json()


def _cloud_tier(shelf: Shelf) -> str:
    tiers = list(shelf.config.tiers)
    if "cloud" in tiers:
        return "cloud"
    others = [tier for tier in tiers if tier != shelf.config.default_tier]
    return others[0] if others else tiers[0]
