"""``s3://BUCKET/PREFIX`` tiers: AWS S3 and every S3-compatible store.

MinIO, OCI, Ceph, moto and GCS interoperability are reached with ``endpoint``. Requests
are path-style unless ``virtual_hosted_style = true``; with a custom endpoint that means
the bucket is prepended to the endpoint's host, since obstore expects it there.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import obstore as obs
from obstore.store import S3Store as _ObS3Store

from shelflife.base.keys import validate_key
from shelflife.config.model import TierConfig
from shelflife.errors import StoreConfigError
from shelflife.stores._obstore import ObstoreStore, client_options, retry_config, split_bucket_url


class S3Store(ObstoreStore):
    """An S3 bucket (and optional prefix) with presigned GET URLs."""

    def __init__(self, tier: TierConfig) -> None:
        bucket, prefix = split_bucket_url(tier.url)
        config: dict[str, Any] = {"region": tier.region or "us-east-1"}
        if tier.endpoint:
            endpoint = tier.endpoint.rstrip("/")
            if tier.virtual_hosted_style:
                parts = urlsplit(endpoint)
                if _is_ip_address(parts.hostname or ""):
                    raise StoreConfigError(
                        f"virtual_hosted_style needs a host name in the endpoint, not the "
                        f"address {parts.hostname}",
                        hint="use path-style requests (virtual_hosted_style = false)",
                    )
                endpoint = urlunsplit(parts._replace(netloc=f"{bucket}.{parts.netloc}"))
            config["endpoint"] = endpoint
        config["virtual_hosted_style_request"] = tier.virtual_hosted_style
        if tier.access_key is not None:
            config["access_key_id"] = tier.access_key.get_secret_value()
        if tier.secret_key is not None:
            config["secret_access_key"] = tier.secret_key.get_secret_value()
        if tier.session_token is not None:
            config["session_token"] = tier.session_token.get_secret_value()
        store = _ObS3Store(
            bucket,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client_options(tier),
            retry_config=retry_config(tier),
        )
        self.bucket = bucket
        self.prefix = prefix
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


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
