"""``az://CONTAINER/PREFIX`` tiers: Azure Blob Storage (and Azurite).

``access_key`` is the storage account's name and ``secret_key`` its key, as in the seed
applications' ``STORAGE_*`` variables; ``endpoint`` points at Azurite or a sovereign cloud.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import obstore as obs
from obstore import exceptions as obe
from obstore.store import AzureStore as _ObAzureStore

from shelflife.base.keys import join_key, validate_key
from shelflife.config.model import TierConfig
from shelflife.errors import StoreConfigError
from shelflife.stores._obstore import (
    ObstoreStore,
    client_options,
    retry_config,
    split_bucket_url,
    translate_error,
)


class AzureStore(ObstoreStore):
    """An Azure Blob container (and optional prefix) with SAS-signed GET URLs."""

    def __init__(self, tier: TierConfig) -> None:
        container, prefix = split_bucket_url(tier.url)
        config: dict[str, Any] = {}
        if tier.access_key is None:
            raise StoreConfigError(
                f"{tier.url}: an Azure tier needs access_key (the storage account name)"
            )
        config["account_name"] = tier.access_key.get_secret_value()
        if tier.secret_key is not None:
            config["account_key"] = tier.secret_key.get_secret_value()
        if tier.endpoint:
            config["endpoint"] = tier.endpoint.rstrip("/")
        try:
            store = _ObAzureStore(
                container,
                prefix=prefix or None,
                config=config,  # type: ignore[arg-type]
                client_options=client_options(tier),
                retry_config=retry_config(tier),
            )
        except obe.BaseError as exc:
            raise translate_error(exc, tier.url.rstrip("/")) from None
        self.container = container
        self.prefix = prefix
        self.account_name = config["account_name"]
        self._account_key = config.get("account_key")
        self.endpoint = (
            config.get("endpoint") or f"https://{self.account_name}.blob.core.windows.net"
        )
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
        if self._account_key:
            # obstore's SAS signs keys that need percent-encoding wrongly (Azure answers
            # 403), so a service SAS comes from Azure's own SDK whenever a key is at hand.
            from azure.storage.blob import BlobSasPermissions, generate_blob_sas

            blob = join_key(self.prefix, key)
            sas = generate_blob_sas(
                self.account_name,
                self.container,
                blob,
                account_key=self._account_key,
                permission=BlobSasPermissions(read=True),
                expiry=datetime.now(UTC) + self.presign_ttl,
            )
            return f"{self.endpoint}/{self.container}/{quote(blob, safe='/')}?{sas}"
        with self._translated(key):
            return await obs.sign_async(self._signer, "GET", key, self.presign_ttl)
