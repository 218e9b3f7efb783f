"""``gs://BUCKET/PREFIX`` tiers: Google Cloud Storage through its JSON API.

Credentials come from ``credentials_file`` (a service account JSON); without it, from the
usual Google application-default credentials. GCS with HMAC keys can also be used as an
``s3://`` tier with ``endpoint = "https://storage.googleapis.com"``.
"""

from __future__ import annotations

from typing import Any

import obstore as obs
from obstore.store import GCSStore as _ObGCSStore

from shelflife.base.keys import validate_key
from shelflife.config.model import TierConfig
from shelflife.stores._obstore import ObstoreStore, client_options, retry_config, split_bucket_url


class GCSStore(ObstoreStore):
    """A GCS bucket (and optional prefix) with V4-signed GET URLs."""

    def __init__(self, tier: TierConfig) -> None:
        bucket, prefix = split_bucket_url(tier.url)
        config: dict[str, Any] = {}
        if tier.credentials_file:
            config["service_account"] = tier.credentials_file
        if tier.endpoint:
            config["base_url"] = tier.endpoint.rstrip("/")
        store = _ObGCSStore(
            bucket,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client_options(tier),
            retry_config=retry_config(tier),
        )
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

    async def url(self, key: str) -> str:
        validate_key(key)
        with self._translated(key):
            return await obs.sign_async(self._signer, "GET", key, self.presign_ttl)
