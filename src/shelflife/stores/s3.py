"""``s3://BUCKET/PREFIX`` tiers: AWS S3 and every S3-compatible store.

MinIO, OCI, Ceph, moto and GCS interoperability are reached with ``endpoint``. Requests
are path-style unless ``virtual_hosted_style = true``; with a custom endpoint that means
the bucket is prepended to the endpoint's host, since obstore expects it there.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import obstore as obs
from obstore.store import S3Store as _ObS3Store

from shelflife.base.extras import needs
from shelflife.base.keys import join_key, validate_key
from shelflife.base.ratelimit import parse_retry_after
from shelflife.config.model import UNREADABLE_CLASSES, TierConfig
from shelflife.errors import (
    ObjectArchived,
    ObjectNotFound,
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
)
from shelflife.stores.proofs import s3_proofs


class S3Store(ObstoreStore):
    """An S3 bucket (and optional prefix) with presigned GET URLs."""

    etag_is_md5 = True  # for unencrypted or SSE-S3 objects; checked on every write
    reports_proofs = True  # a HEAD with ChecksumMode=ENABLED (through boto3)

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
        archive = (tier.storage_class or "").upper() in ARCHIVE_CLASSES
        by_checksum = archive or tier.verify == "checksum"
        if by_checksum:
            # Every upload carries its SHA-256 (x-amz-checksum-sha256): S3 refuses a body
            # that does not match it and keeps it, to be asked for instead of a read.
            config["checksum_algorithm"] = "sha256"
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
        self.archive = archive
        self.proofs_on_write = by_checksum
        self._tier = tier
        self._client: Any = None
        self._signer = store
        super().__init__(
            store,
            tier.url.rstrip("/"),
            multipart_threshold=tier.multipart_threshold,
            multipart_chunk_size=tier.multipart_chunk_size,
            storage_class=tier.storage_class,
            retries=tier.retries,
        )

    def restore_hint(self, key: str) -> str:
        name = join_key(self.prefix, key)
        return (
            f"restore it first: aws s3api restore-object --bucket {self.bucket} --key '{name}' "
            "--restore-request Days=7 (hours for GLACIER, up to 12 for DEEP_ARCHIVE), then "
            "try again; or recall it to a readable tier once restored"
        )

    async def url(self, key: str) -> str:
        validate_key(key)
        if self.archive and await self.archived(key):
            raise ObjectArchived(
                f"{self.location}/{key} is in an archive storage class: a URL to it would be "
                "refused until it is restored",
                hint=self.restore_hint(key),
            )
        with self._translated(key):
            return await obs.sign_async(self._signer, "GET", key, self.presign_ttl)

    async def stored_proofs(self, key: str) -> tuple[int, set[str]]:
        answer = await self._head_object(key)
        proofs = s3_proofs(answer.get("ChecksumSHA256"), answer.get("ETag"))
        return int(answer["ContentLength"]), proofs

    async def archived(self, key: str) -> bool:
        """Whether the object sits in an archive class and is not restored (unreadable)."""
        answer = await self._head_object(key)
        if str(answer.get("StorageClass", "")).upper() not in ARCHIVE_CLASSES:
            return False
        return 'ongoing-request="false"' not in str(answer.get("Restore", ""))

    async def _head_object(self, key: str) -> dict[str, Any]:
        """HEAD through boto3: obstore's has no checksum mode nor storage class.

        boto3 retries nothing itself: the request is retried like every other, after its
        slot, and a throttle is held for the Retry-After the answer carries."""
        validate_key(key)
        if self._client is None:
            self._client = s3_client(self._tier, attempts=1)
        name = join_key(self.prefix, key)

        def head() -> dict[str, Any]:
            from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
            from botocore.exceptions import ConnectionError as BotoConnectionError

            try:
                answer: dict[str, Any] = self._client.head_object(
                    Bucket=self.bucket, Key=name, ChecksumMode="ENABLED"
                )
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                metadata = exc.response.get("ResponseMetadata", {})
                status = int(metadata.get("HTTPStatusCode") or 0)
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise ObjectNotFound(f"no object at {self.location}/{key}") from None
                headers = metadata.get("HTTPHeaders", {})
                # an answer to a HEAD has no body to name SlowDown: a 503 asking for a
                # Retry-After says it as well
                asks = status == 503 and "retry-after" in headers
                if status == 429 or asks or code in ("SlowDown", "TooManyRequests"):
                    raise StoreThrottled(
                        f"{self.location}/{key}: the store asked to slow down ({status} {code})",
                        hint=THROTTLE_HINT,
                        retry_after=parse_retry_after(headers.get("retry-after")),
                    ) from None
                if status >= 500:
                    raise StoreTransient(
                        f"{self.location}/{key}: HEAD failed ({status} {code})"
                    ) from None
                raise StoreError(f"{self.location}/{key}: HEAD failed ({code or exc})") from None
            except (BotoConnectionError, HTTPClientError) as exc:
                raise StoreTransient(f"{self.location}/{key}: HEAD failed ({exc})") from None
            except BotoCoreError as exc:
                raise StoreError(f"{self.location}/{key}: HEAD failed ({exc})") from None
            return answer

        return await self._retry(lambda: asyncio.to_thread(head), f"head {key}")


ARCHIVE_CLASSES = UNREADABLE_CLASSES["s3"]
"""Storage classes whose objects must be restored before they can be read."""


def s3_client(tier: TierConfig, *, attempts: int = 3) -> Any:
    """A boto3 client for a tier (obstore has no bucket calls, nor a checksum-mode HEAD),
    trying each request ``attempts`` times in all."""
    with needs("an s3:// tier"):
        import boto3
        from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=tier.endpoint,
        region_name=tier.region or "us-east-1",
        aws_access_key_id=None if tier.access_key is None else tier.access_key.get_secret_value(),
        aws_secret_access_key=None
        if tier.secret_key is None
        else tier.secret_key.get_secret_value(),
        aws_session_token=None
        if tier.session_token is None
        else tier.session_token.get_secret_value(),
        config=BotoConfig(
            s3={"addressing_style": "virtual" if tier.virtual_hosted_style else "path"},
            retries={"total_max_attempts": attempts},
            connect_timeout=10,
            read_timeout=30,
        ),
    )


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
