"""``gs://BUCKET/PREFIX`` tiers: Google Cloud Storage through its XML API (obstore's client).

Credentials come from ``credentials_file`` (a service account JSON); without it, from the
usual Google application-default credentials. GCS with HMAC keys can also be used as an
``s3://`` tier with ``endpoint = "https://storage.googleapis.com"``.

Signed URLs are V4 and always signed for the host ``storage.googleapis.com`` (obstore 0.12
signs that host whatever ``endpoint`` says): with a custom endpoint, a server that checks
signatures sees another host and refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import obstore as obs
from obstore import exceptions as obe
from obstore.store import GCSStore as _ObGCSStore

from shelflife.base.keys import validate_key
from shelflife.config.model import TierConfig
from shelflife.errors import StoreAuthError, StoreConfigError, StoreError
from shelflife.stores._obstore import ObstoreStore, client_options, retry_config, split_bucket_url

CREDENTIALS_HINT = (
    "check the tier's credentials_file (a service account's JSON key) and that the account "
    "may use the bucket (roles/storage.objectAdmin)"
)
KEY_FILE_HINT = (
    "credentials_file must name a service account's JSON key file, as the Google Cloud "
    "console downloads it"
)
# obstore reports a refused listing as a generic error that carries the status.
_REFUSED = re.compile(r"status code: 40[13]\b")


class GCSStore(ObstoreStore):
    """A GCS bucket (and optional prefix) with V4-signed GET URLs."""

    def __init__(self, tier: TierConfig) -> None:
        bucket, prefix = split_bucket_url(tier.url)
        config: dict[str, Any] = {}
        if tier.credentials_file:
            if not Path(tier.credentials_file).is_file():
                raise StoreConfigError(
                    f"no service account key file at {tier.credentials_file}",
                    hint=KEY_FILE_HINT,
                )
            config["service_account"] = tier.credentials_file
        if tier.endpoint:
            config["base_url"] = tier.endpoint.rstrip("/")
        try:
            store = _ObGCSStore(
                bucket,
                prefix=prefix or None,
                config=config,  # type: ignore[arg-type]
                client_options=client_options(tier),
                retry_config=retry_config(tier),
            )
        except obe.BaseError as exc:
            # obstore appends a multi-line debug dump; its first line says what is wrong.
            first = str(exc).strip().splitlines()[0]
            hint = KEY_FILE_HINT if "credential" in first.lower() else None
            raise StoreConfigError(first, hint=hint) from None
        self.bucket = bucket
        self.presign_ttl = tier.presign_ttl
        self._signer = store
        super().__init__(
            store,
            tier.url.rstrip("/"),
            multipart_threshold=tier.multipart_threshold,
            multipart_chunk_size=tier.multipart_chunk_size,
            storage_class=tier.storage_class,
            retries=tier.retries,
        )

    @contextmanager
    def _translated(self, key: str | None = None) -> Iterator[None]:
        """The shared translation, with GCS's wording for refused credentials."""
        try:
            with super()._translated(key):
                yield
        except StoreAuthError as exc:
            raise StoreAuthError(exc.message, hint=CREDENTIALS_HINT) from exc.__cause__
        except StoreError as exc:
            if type(exc) is not StoreError or not _REFUSED.search(str(exc.__cause__)):
                raise
            raise StoreAuthError(
                f"{self.location} refused access to the bucket", hint=CREDENTIALS_HINT
            ) from exc.__cause__

    async def url(self, key: str) -> str:
        validate_key(key)
        with self._translated(key):
            return await obs.sign_async(self._signer, "GET", key, self.presign_ttl)
