"""Choosing a store by its tier URL's scheme (obstore's ``from_url``, fsspec's registry)."""

from __future__ import annotations

from collections.abc import Callable

from shelflife.base.extras import require
from shelflife.config.model import TierConfig
from shelflife.errors import MissingExtraError, StoreConfigError, StoreError
from shelflife.stores._obstore import ObstoreStore


def _local(tier: TierConfig) -> ObstoreStore:
    from shelflife.stores.local import LocalStore

    return LocalStore.from_tier(tier)


def _memory(tier: TierConfig) -> ObstoreStore:
    from shelflife.stores.memory import MemoryStore

    return MemoryStore.from_tier(tier)


def _s3(tier: TierConfig) -> ObstoreStore:
    require("boto3", "an s3:// tier")  # HEAD with checksums, versioning, lifecycle policies
    from shelflife.stores.s3 import S3Store

    return S3Store(tier)


def _azure(tier: TierConfig) -> ObstoreStore:
    require("azure.storage.blob", "an az:// tier")  # blob properties, tiers, SAS
    from shelflife.stores.azure import AzureStore

    return AzureStore(tier)


def _gcs(tier: TierConfig) -> ObstoreStore:
    from shelflife.stores.gcs import GCSStore

    return GCSStore(tier)


BACKENDS: dict[str, Callable[[TierConfig], ObstoreStore]] = {
    "file": _local,
    "memory": _memory,
    "s3": _s3,
    "az": _azure,
    "azure": _azure,
    "gs": _gcs,
}


def open_store(tier: TierConfig, *, name: str = "") -> ObstoreStore:
    """Build the store a tier's URL names; raise StoreConfigError with the tier's name."""
    factory = BACKENDS.get(tier.scheme)
    label = f"tier {name!r}" if name else tier.url
    if factory is None:
        raise StoreConfigError(f"{label}: no backend for scheme {tier.scheme!r}")
    try:
        return factory(tier)
    except MissingExtraError as exc:
        raise MissingExtraError(f"{label} ({exc.feature})", exc.module, exc.extra) from None
    except StoreError as exc:
        raise StoreConfigError(f"{label}: {exc.message}", hint=exc.hint) from None
    except (ValueError, TypeError, Exception) as exc:
        raise StoreConfigError(f"{label}: cannot open {tier.url}: {exc}") from None
