"""``az://CONTAINER/PREFIX`` tiers: Azure Blob Storage (and Azurite).

``access_key`` is the storage account's name and ``secret_key`` its key, as in the seed
applications' ``STORAGE_*`` variables; ``endpoint`` points at Azurite or a sovereign cloud.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import obstore as obs
from obstore import exceptions as obe
from obstore.store import AzureStore as _ObAzureStore

from shelflife.base.keys import join_key, validate_key
from shelflife.base.ratelimit import parse_retry_after
from shelflife.base.retry import INITIAL_WAIT, MAX_WAIT
from shelflife.config.model import TierConfig
from shelflife.errors import (
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    StoreAuthError,
    StoreConfigError,
    StoreError,
    StoreThrottled,
    StoreTransient,
)
from shelflife.stores._obstore import (
    THROTTLE_HINT,
    ObstoreStore,
    client_options,
    retry_config,
    split_bucket_url,
    translate_error,
)
from shelflife.stores.base import PutResult
from shelflife.stores.proofs import md5_proof


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
        self._client: Any = None
        # Archive blobs cannot be read until rehydrated: copies are verified by the
        # Content-MD5 Azure computes for a blob written in one request.
        self.archive = (tier.storage_class or "").lower() == "archive"
        self.archived_refusals = (StoreAuthError, ObjectExists)  # a read of one: 409
        # With verify = "checksum", a copy is verified by that Content-MD5 too (one
        # properties request instead of reading the blob back), where the key allows it.
        self.proofs_on_write = self.archive or tier.verify == "checksum"
        self.reports_proofs = self._account_key is not None
        super().__init__(
            store,
            tier.url.rstrip("/"),
            multipart_threshold=tier.multipart_threshold,
            multipart_chunk_size=tier.multipart_chunk_size,
            storage_class=tier.storage_class,
            retries=tier.retries,
        )

    async def stored_proofs(self, key: str) -> tuple[int, set[str]]:
        properties = await self._properties(key)
        return int(properties.size), md5_proof(properties.content_settings.content_md5)

    async def verify_unread(self, written: PutResult) -> str | None:
        problem = await super().verify_unread(written)
        if problem and written.size > self.multipart_threshold:
            problem += (
                " (Azure keeps no Content-MD5 for a blob uploaded in blocks: a blob goes up in "
                "one request up to this tier's multipart_threshold, and in a migration up to "
                "[executor] transfer_memory shared by the transfers in flight; raise either "
                "above the object's size, at most 5000MiB and held in memory while it is "
                "sent, or use the Cold access tier)"
            )
        return problem

    async def archived(self, key: str) -> bool:
        properties = await self._properties(key)
        return str(properties.blob_tier or "").lower() == "archive"

    def restore_hint(self, key: str) -> str:
        blob = join_key(self.prefix, key)
        return (
            f"rehydrate it first: az storage blob set-tier --container-name {self.container} "
            f"--name '{blob}' --tier Hot --rehydrate-priority Standard (up to 15 hours), "
            "then try again"
        )

    async def _properties(self, key: str) -> Any:
        """Blob properties through Azure's SDK (obstore's HEAD has no MD5 nor tier).

        The SDK retries nothing itself: the request is retried like every other, after
        its slot, and a throttle (503 ServerBusy, 429) is held for the delay it names."""
        validate_key(key)
        if self._account_key is None:
            raise StoreConfigError(
                f"{self.location}: an archive tier needs the account key (secret_key) to "
                "read blob properties"
            )
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from azure.storage.blob import BlobServiceClient

        if self._client is None:
            self._client = BlobServiceClient(
                self.endpoint,
                credential={"account_name": self.account_name, "account_key": self._account_key},
                retry_policy=sdk_retry_policy(0),
            )
        blob = self._client.get_blob_client(self.container, join_key(self.prefix, key))

        async def read_once() -> Any:
            try:
                return await asyncio.to_thread(blob.get_blob_properties)
            except ResourceNotFoundError:
                raise ObjectNotFound(f"no object at {self.location}/{key}") from None
            except AzureError as exc:
                raise _sdk_error(exc, f"{self.location}/{key}: properties") from None

        return await self._retry(read_once, f"properties of {key}")

    async def url(self, key: str) -> str:
        validate_key(key)
        if self.archive and await self.archived(key):
            raise ObjectArchived(
                f"{self.location}/{key} is in the Archive access tier: a URL to it would be "
                "refused until it is rehydrated",
                hint=self.restore_hint(key),
            )
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


def _sdk_error(exc: Exception, subject: str) -> StoreError:
    """An Azure SDK error in shelflife's tree: throttles (with the delay the answer names)
    and other 5xx answers and dropped connections retryable, the rest permanent."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    response = getattr(exc, "response", None)
    status = int(getattr(response, "status_code", 0) or 0) if response is not None else 0
    code = str(getattr(exc, "error_code", "") or "")
    headers = response.headers if response is not None else {}
    asks = any(name in headers for name in ("Retry-After", "x-ms-retry-after-ms"))
    if isinstance(exc, HttpResponseError) and (
        status == 429 or (status == 503 and (asks or "ServerBusy" in (code + str(exc))))
    ):
        delay = parse_retry_after(headers.get("Retry-After"))
        if delay is None:
            milliseconds = headers.get("x-ms-retry-after-ms") or headers.get("retry-after-ms")
            delay = parse_retry_after(f"{milliseconds}ms" if milliseconds else None)
        return StoreThrottled(
            f"{subject}: the store asked to slow down ({message})",
            hint=THROTTLE_HINT,
            retry_after=delay,
        )
    if status >= 500 or isinstance(exc, ServiceRequestError | ServiceResponseError):
        return StoreTransient(f"{subject}: {message}")
    return StoreError(f"{subject}: {message}")


def sdk_retry_policy(retries: int) -> Any:
    """The retry policy of Azure's SDK client as the tier's own client retries: ``retries``
    times (connection, read and status errors alike), backing off 0.1 s, 0.2 s, 0.4 s …
    at most 5 s, with jitter. The SDK's default tries three times after 15, 18 and 24 s."""
    from azure.storage.blob import ExponentialRetry

    class _Retry(ExponentialRetry):
        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            # the SDK counts the failed try before it sleeps: 1 before the first retry
            wait = min(MAX_WAIT, INITIAL_WAIT * 2 ** max(settings["count"] - 1, 0))
            return random.uniform(wait / 2, wait)

    return _Retry(
        retry_total=retries,
        retry_connect=retries,
        retry_read=retries,
        retry_status=retries,
    )
