"""A thin facade with the names users of the two services shelflife replaces know
(docs/migrating.md).

The video platform's storage service:

- ``base_storage_service`` (a :class:`StorageService` on the usual configuration, opened
  on first use) with ``.provider``; ``upload_file(path, filename)`` stores on the tier the
  provider names (the cloud tier unless ``STORAGE_PROVIDER`` is ``LOCAL``; with a config
  file, the default tier), ``upload_to_cloud(path, filename)`` on the cloud tier, and
  ``get_file_url(filename)`` returns a working URL for wherever the file is today;
- ``StorageManager.enforce_threshold()`` migrates the oldest objects until each tier is
  at or below its high watermark (80 %), as the original did;
  ``StorageManager.apply_retention_policy(days=90)`` expires cloud-tier objects older than
  ``days`` through the same plan and re-checks as ``shelflife expire`` (rows are treated
  as each reference's ``on_expire`` says).

The MinIO clean-up: ``cleanup_orphan_files(dry_run=…, bucket=…)`` and
``get_storage_stats()`` (with its ``buckets`` view), returning dicts shaped as
:mod:`shelflife.service.originals` documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shelflife.config import Config
from shelflife.service import originals
from shelflife.service.records import refresh_stats
from shelflife.service.shelf import Shelf

PROVIDER_BY_SCHEME = {"file": "LOCAL", "memory": "LOCAL", "az": "AZURE", "gs": "GCP"}


class StorageService:
    """Upload files and resolve their URLs through a shelf."""

    def __init__(self, shelf: Shelf | None = None, *, config: Config | str | Path | None = None):
        self.shelf = shelf or Shelf.from_config(config)

    @property
    def provider(self) -> str:
        """Where ``upload_file`` writes: ``STORAGE_PROVIDER`` in the environment mode;
        with a config file, what the default tier is (``LOCAL``, ``AWS``, ``GCP``,
        ``AZURE``, ``CUSTOM`` for an S3-compatible endpoint)."""
        environment = self.shelf.config.environment
        if environment is not None:
            return environment.provider
        tier = self.shelf.config.tiers[self.shelf.config.default_tier]
        if tier.scheme == "s3":
            if not tier.endpoint:
                return "AWS"
            return "GCP" if "storage.googleapis.com" in tier.endpoint else "CUSTOM"
        return PROVIDER_BY_SCHEME.get(tier.scheme, "CUSTOM")

    def upload_file(self, path: str | Path, filename: str | None = None) -> str:
        """Store ``path`` as ``filename`` where the provider says; return the row value."""
        return self.shelf.put(path, filename, tier=self._upload_tier()).ref

    def upload_to_cloud(self, path: str | Path, filename: str | None = None) -> str:
        """Store ``path`` on the cloud tier (the next tier after local); return its row value."""
        return self.shelf.put(path, filename, tier=self._cloud_tier()).ref

    def get_file_url(self, filename: str) -> str:
        """A URL for a key or a row value, on whichever tier the file sits now."""
        return self.shelf.url(filename)

    def _cloud_tier(self) -> str:
        return _cloud_tier(self.shelf)

    def _upload_tier(self) -> str:
        environment = self.shelf.config.environment
        if environment is not None and environment.provider != "LOCAL":
            return self._cloud_tier()
        return self.shelf.config.default_tier


class StorageManager:
    """The lifecycle side of the storage service."""

    RETENTION_DAYS = originals.RETENTION_DAYS

    def __init__(self, shelf: Shelf | None = None, *, config: Config | str | Path | None = None):
        self.shelf = shelf or Shelf.from_config(config)

    def enforce_threshold(self, *, dry_run: bool = False) -> dict[str, object]:
        """Move the oldest objects off tiers above their high watermark until each is at
        or below it (80 %); return the run (``dry_run``: the plan, nothing moved)."""
        outcome = originals.enforce_threshold(
            self.shelf.context, self.shelf.dispatcher, dry_run=dry_run
        )
        return outcome.as_json()

    def apply_retention_policy(
        self, days: int | None = None, *, yes: bool = False
    ) -> dict[str, object]:
        """Expire objects on the cloud tier older than ``days`` (RETENTION_DAYS by default);
        return the run. Deletions above the executor's caps need ``yes=True``."""
        days = self.RETENTION_DAYS if days is None else days
        outcome = originals.retention(self.shelf.context, self.shelf.dispatcher, days=days, yes=yes)
        return outcome.as_json()


def cleanup_orphan_files(
    dry_run: bool = False,
    bucket: str | None = None,
    *,
    yes: bool = False,
    shelf: Shelf | None = None,
) -> dict[str, Any]:
    """The MinIO clean-up's task: collect the orphans of ``bucket`` (a bucket or tier
    name; every tier with a collect-orphans rule when None) through ``gc``, with its
    grace, caps and refusals. ``dry_run`` deletes nothing and reports what would go."""
    shelf = shelf or _default_shelf()
    return originals.cleanup_orphan_files(
        shelf.context, shelf.dispatcher, dry_run=dry_run, bucket=bucket, yes=yes
    )


def get_storage_stats(*, shelf: Shelf | None = None) -> dict[str, Any]:
    """Scan, re-read the references and store the figures (as ``stats --refresh``);
    the stats JSON with a ``buckets`` view per bucket in GB added."""
    shelf = shelf or _default_shelf()
    shelf.scan()
    if shelf.config.references:
        shelf.refresh_references()
    body = refresh_stats(shelf.context)
    return {**body, "buckets": originals.buckets_view(shelf.config, body)}


_opened: dict[str, StorageService] = {}


def _default_shelf() -> Shelf:
    return _service().shelf


def _service() -> StorageService:
    if "service" not in _opened:
        _opened["service"] = StorageService()
    return _opened["service"]


def __getattr__(name: str) -> Any:
    """``base_storage_service``: the original's singleton, opened on first use."""
    if name == "base_storage_service":
        return _service()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cloud_tier(shelf: Shelf) -> str:
    return originals.cloud_tier(shelf.config)
