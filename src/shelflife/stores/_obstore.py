"""The obstore-backed implementation shared by every backend, and error translation.

Each backend module builds an obstore store from its tier's settings and subclasses
:class:`ObstoreStore` only where the backend differs (signing, deletes of missing keys).
obstore's and the OS's exceptions are translated into shelflife's tree here, at the
boundary, and nowhere else.
"""

from __future__ import annotations

import asyncio
import errno
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import obstore as obs
from obstore import exceptions as obe

from shelflife.base.keys import validate_key, validate_prefix
from shelflife.base.ratelimit import RateLimiter
from shelflife.base.retry import INITIAL_WAIT, MAX_WAIT, retrying
from shelflife.errors import (
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    StoreAuthError,
    StoreConfigError,
    StoreError,
    StoreThrottled,
    StoreTransient,
    StoreUnreachable,
)
from shelflife.stores.base import (
    Entry,
    ObjectInfo,
    ObjectStream,
    PutResult,
    PutSource,
    Stamps,
    micros,
)
from shelflife.stores.proofs import Hasher

if TYPE_CHECKING:
    from collections.abc import Iterator

    from obstore import ObjectMeta
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

T = TypeVar("T")

READ_CHUNK = 8 * 1024 * 1024
LIST_CHUNK = 1000
_UNREACHABLE_MARKERS = ("dns error", "timed out", "connection refused", "tcp connect", "to connect")
# A failure of this request, not of the store: the next attempt may well succeed.
_TRANSIENT = re.compile(
    r"status code: (5\d\d|429)|error sending request|body error|connection reset|"
    r"broken pipe|connection closed|incomplete message|unexpected eof",
    re.IGNORECASE,
)


_REFUSED = re.compile(r"status code: 40[13]\b", re.IGNORECASE)
# The store refusing a request for its rate: 429, or a 503 that says so (S3 SlowDown or
# "Reduce your request rate", Azure ServerBusy). Another 503 is a failure like a 500.
_THROTTLED = re.compile(
    r"status code: 429\b|status code: 503\b.*(SlowDown|ServerBusy|TooManyRequests|"
    r"reduce your request rate)",
    re.IGNORECASE | re.DOTALL,
)
THROTTLE_HINT = (
    "the store limits its request rate: shelflife waits and slows the tier down; set the "
    "tier's max_requests_per_second below the store's limit to stay clear of it"
)
# A bulk delete sends this many keys per request (S3's limit; Azure's batches are smaller).
DELETE_BATCH = 1000


def translate_error(exc: BaseException, where: str, key: str | None = None) -> StoreError:
    """Map an obstore/OS exception to shelflife's error tree, with a hint for the user."""
    shown = key if key is None or len(key) <= 120 else key[:117] + "..."
    subject = f"{where}/{shown}" if key else where
    text = str(exc)
    if isinstance(exc, FileNotFoundError | obe.NotFoundError):
        return ObjectNotFound(f"no object at {subject}")
    if isinstance(exc, obe.AlreadyExistsError | FileExistsError):
        return ObjectExists(f"an object already exists at {subject}")
    if isinstance(exc, obe.PreconditionError):
        return ObjectExists(f"{subject} changed or exists already (precondition failed)")
    if isinstance(exc, obe.UnauthenticatedError | obe.PermissionDeniedError | PermissionError):
        return StoreAuthError(
            f"{where} refused access: {_first_line(text)}",
            hint="check the tier's access_key/secret_key (or file permissions for a local tier)",
        )
    if "invalid access key" in text.lower():
        return StoreConfigError(
            f"{where}: the account key is not valid ({_first_line(text).split(': ')[-1]})",
            hint="secret_key must be the storage account's key exactly as the portal shows it "
            "(base64)",
        )
    if "permission denied" in text.lower():
        return StoreAuthError(
            f"{subject}: permission denied",
            hint="give the user running shelflife read and write access to the tier's folder",
        )
    if isinstance(exc, obe.UnknownConfigurationKeyError):
        return StoreConfigError(f"{where}: {_first_line(text)}")
    lowered = text.lower()
    if "builder error" in lowered:
        return StoreConfigError(
            f"{where}: the HTTP client could not be built ({_first_line(text)})",
            hint="an http:// endpoint needs allow_http = true on the tier",
        )
    if "nosuchbucket" in lowered.replace(" ", "") or "containernotfound" in lowered:
        return StoreConfigError(
            f"{where}: the bucket or container does not exist",
            hint="create it first (e.g. 'aws s3 mb'), or fix the tier's url",
        )
    if _REFUSED.search(text):  # a refusal obstore reports as a generic error
        return StoreAuthError(
            f"{where} refused access: {_first_line(text)[:200]}",
            hint="check the tier's credentials and that they may read and write here",
        )
    if any(marker in lowered for marker in _UNREACHABLE_MARKERS):
        return StoreUnreachable(
            f"cannot reach {where}: {_first_line(text)}",
            hint="check the tier's endpoint and that the server is running",
        )
    if _THROTTLED.search(text):
        # obstore reports the status and body of the answer, not its headers: a
        # Retry-After it carried is not known here (the tier's backoff stands for it)
        return StoreThrottled(
            f"{subject}: the store failed this request and asked to slow down ({_short(text)})",
            hint=THROTTLE_HINT,
        )
    if _TRANSIENT.search(text):
        return StoreTransient(
            f"{subject}: the store failed this request ({_short(text)})",
            hint="usually passing: the next run tries again (raise the tier's retries if it "
            "persists)",
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return StoreError(
            f"{subject}: no space left on the device",
            hint="free space there (or move objects off it with 'shelflife run'); nothing "
            "was half written",
        )
    if isinstance(exc, OSError):
        return StoreError(f"{subject}: {exc.strerror or text}")
    return StoreError(f"{subject}: {_first_line(text)}")


def _short(text: str) -> str:
    """The part of an obstore message that says what happened, without the request URL."""
    line = _first_line(text)
    match = _TRANSIENT.search(line)
    return line[match.start() :][:120] if match else line[:120]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:300]


class ObstoreStore:
    """A :class:`~shelflife.stores.base.Store` over any obstore store."""

    def __init__(
        self,
        store: ObjectStore,
        url: str,
        *,
        multipart_threshold: int = 8 * 1024 * 1024,
        multipart_chunk_size: int = 8 * 1024 * 1024,
        max_part_concurrency: int = 4,
        storage_class: str | None = None,
        retries: int = 3,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.location = url
        # Every request this store makes takes a slot from its tier's limiter first; the
        # engine replaces this unlimited one with the tier's (shared by a run's transfers).
        self.limiter = limiter or RateLimiter()
        # Whole operations tried again on a retryable error (the client retries requests).
        self.retries = retries
        # Applied to every write (an archive tier is one more rung of the ladder).
        self.storage_class = storage_class
        self._attributes: Any = {"Storage-Class": storage_class} if storage_class else None
        self._store = store
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk_size = max(multipart_chunk_size, 5 * 1024 * 1024)
        self.max_part_concurrency = max_part_concurrency

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    @contextmanager
    def _writing(self, key: str) -> Iterator[None]:
        """Like _translated, for writes: a write that finds nothing lacks its container."""
        try:
            with self._translated(key):
                yield
        except ObjectNotFound:
            raise StoreConfigError(
                f"{self.location}: the bucket, container or folder does not exist",
                hint="create it first, or fix the tier's url",
            ) from None

    @contextmanager
    def _translated(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (obe.BaseError, OSError) as exc:
            raise translate_error(exc, self.location, key) from exc

    # Whether copies keep their Stamps in the object's metadata (a local tier keeps the
    # modification time in the file itself, and its listing says it).
    carries_stamps = True
    # Whether objects written here cannot be read back at once (an archive storage class):
    # a copy is then verified by the store's own checksum and size, never by a read.
    archive = False

    def _put_attributes(self, stamps: Stamps | None) -> Any:
        if stamps is None:
            return self._attributes
        return {**(self._attributes or {}), **stamp_metadata(stamps)}

    async def stamps(self, key: str) -> Stamps | None:
        """The instants a copy carries in its metadata (see :class:`Stamps`), if any.

        One HEAD request; an archived object answers it too."""
        validate_key(key)

        async def head_once() -> Any:
            with self._translated(key):
                return await obs.get_async(self._store, key, options={"head": True})

        result = await self._retry(head_once, f"head {key}")
        return read_stamps(result.attributes, result.meta["last_modified"])

    async def put(
        self,
        key: str,
        source: PutSource,
        *,
        overwrite: bool = True,
        stamps: Stamps | None = None,
        multipart: bool | None = None,
    ) -> PutResult:
        validate_key(key)
        attributes = self._put_attributes(stamps)
        if isinstance(source, Path):
            source = await self._small_file_or_stream(source)
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            size = len(data)
            parts = size > self.multipart_threshold if multipart is None else multipart
            hasher = self._hasher(parts)
            hasher.update(data)

            # A create-only write is one PUT (``If-None-Match: *``) whatever its size: obstore
            # sends no multipart upload in any mode but "overwrite". One request, one slot.
            in_parts = parts and overwrite

            async def put_once() -> Any:
                with self._writing(key):
                    return await obs.put_async(
                        self._store,
                        key,
                        # in parts: each part takes its slot as its bytes go to the client
                        self._paced(_slices(data, self.multipart_chunk_size)) if in_parts else data,
                        mode="overwrite" if overwrite else "create",
                        attributes=attributes,
                        use_multipart=in_parts,
                        chunk_size=self.multipart_chunk_size,
                        max_concurrency=self.max_part_concurrency,
                    )

            result = await self._retry(put_once, f"put {key}", paced=in_parts)
        else:
            hasher = self._hasher(parts=True)
            if not overwrite and await self.exists(key):
                # obstore's multipart upload has no create-only mode: check first, and the
                # caller holds a lease on the key so nothing else writes it meanwhile.
                raise ObjectExists(f"an object already exists at {self.location}/{key}")
            with self._held(), self._writing(key):
                result = await obs.put_async(
                    self._store,
                    key,
                    self._paced(_hashing(source, hasher)),
                    attributes=attributes,
                    chunk_size=self.multipart_chunk_size,
                    max_concurrency=self.max_part_concurrency,
                )
        etag = normal_etag(result.get("e_tag"))
        proofs = hasher.proofs()
        return PutResult(
            key,
            hasher.size,
            hasher.checksum(),
            etag,
            proofs,
            # The store's answer to this very upload names the MD5 of the bytes sent
            # (whole, or of the parts' MD5s): it received exactly them.
            vouched=self.etag_is_md5 and etag is not None and f"md5:{etag}" in proofs,
        )

    # Whether a write's ETag is the MD5 of the bytes received (S3's, for an upload in one
    # request or in parts, unless the bucket encrypts with KMS keys) — checked, never
    # assumed: an ETag that is not the MD5 of the bytes sent simply proves nothing.
    etag_is_md5 = False
    # Whether writes hash the proofs the store may report (MD5 too, and per part): for
    # tiers that verify copies by checksum, and archive tiers.
    proofs_on_write = False
    # Whether stored_proofs can ask the store for its checksum of an object.
    reports_proofs = False

    def _hasher(self, parts: bool) -> Hasher:
        if not (self.proofs_on_write or self.archive):
            return Hasher()
        if parts:
            return Hasher(self.multipart_chunk_size)
        return Hasher(md5=True)

    async def stored_proofs(self, key: str) -> tuple[int, set[str]]:
        """The size of an object and the proofs of its bytes the store reports (see
        :mod:`shelflife.stores.proofs`), without reading it."""
        raise StoreConfigError(
            f"{self.location} cannot vouch for an object's bytes without a read",
            hint="archive storage classes are supported on S3 and Azure tiers",
        )

    async def verify_unread(self, written: PutResult) -> str | None:
        """What is wrong with a copy on an archive tier, judged by the store's own
        checksum and size (None: it holds exactly the bytes written)."""
        size, proofs = await self.stored_proofs(written.key)
        if size != written.size:
            return f"the store holds {size} bytes, {written.size} were written"
        if not proofs:
            return "the store reports no checksum or ETag to verify the copy by"
        if not proofs & written.proofs:
            shown = ", ".join(sorted(proofs))[:160]
            return f"the store's checksum ({shown}) is not that of the bytes written"
        return None

    async def _small_file_or_stream(self, path: Path) -> bytes | AsyncIterable[bytes]:
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size <= self.multipart_threshold:
                return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFound(f"no file at {path}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        return _read_file_chunks(path, self.multipart_chunk_size)

    async def _retry(
        self, operation: Callable[[], Awaitable[T]], what: str, *, paced: bool = False
    ) -> T:
        """``operation`` (one request; ``paced``: one that takes its own slots) retried,
        each attempt after its slot, a throttle holding the whole tier."""
        return await retrying(
            operation,
            retries=self.retries,
            what=f"{what} on {self.location}",
            limiter=self.limiter,
            paced=paced,
        )

    @contextmanager
    def _held(self) -> Iterator[None]:
        """A throttle of a request not retried here (a streamed upload cannot be sent
        again) still holds the tier, before the caller retries the whole operation."""
        try:
            yield
        except StoreThrottled as exc:
            self.limiter.throttled(exc.retry_after)
            raise

    async def _paced(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """``source`` handed on to a multipart upload, one slot per part as its first
        bytes pass, one for creating the upload and one for completing it."""
        await self.limiter.acquire()  # create
        size = 0
        part = self.multipart_chunk_size
        async for chunk in source:
            view = memoryview(chunk)
            while view:
                if size % part == 0:
                    await self.limiter.acquire()  # the part these bytes start
                room = part - size % part
                piece, view = view[:room], view[room:]
                size += len(piece)
                yield bytes(piece) if len(piece) != len(chunk) else chunk
        if size == 0:
            await self.limiter.acquire()  # an empty upload still sends one part
        await self.limiter.acquire()  # complete

    async def get(self, key: str, *, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Stream an object; opening it is retried, a stream cut short raises (the caller
        has had part of the bytes and must start over)."""
        validate_key(key)

        async def open_once() -> Any:
            with self._translated(key):
                return await obs.get_async(self._store, key)

        result = await self._readable(self._retry(open_once, f"get {key}"), key)
        with self._translated(key):
            async for chunk in result.stream(min_chunk_size=chunk_size):
                yield bytes(chunk)

    # How the store refuses to read an archived object (S3: 403; Azure: 409).
    archived_refusals: tuple[type[StoreError], ...] = (StoreAuthError,)

    async def _readable(self, reading: Awaitable[T], key: str) -> T:
        """``reading``, with a refusal explained when the object is archived."""
        try:
            return await reading
        except self.archived_refusals:
            try:
                archived = await self.archived(key)
            except StoreError:
                archived = False  # the refusal as it was is the better message
            if archived:
                raise ObjectArchived(
                    f"{self.location}/{key} is archived and cannot be read until it is restored",
                    hint=self.restore_hint(key),
                ) from None
            raise

    async def archived(self, key: str) -> bool:
        """Whether the object must be restored before it can be read (archive classes)."""
        return False

    def restore_hint(self, key: str) -> str:
        return "restore it with the store's own tools, then try again"

    async def get_bytes(self, key: str) -> bytes:
        """The whole object in memory: only for objects known to be small."""
        validate_key(key)

        async def read_once() -> bytes:
            with self._translated(key):
                result = await obs.get_async(self._store, key)
                return bytes(await result.bytes_async())

        return await self._readable(self._retry(read_once, f"get {key}"), key)

    async def open(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = READ_CHUNK
    ) -> ObjectStream:
        """One GET, retried until it answers (and explained if the object is archived);
        its body is then streamed as obstore receives it, at least ``chunk_size`` bytes
        at a time (the last chunk may be shorter). A stream cut short raises."""
        validate_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:  # a range of no bytes, which a GET cannot ask for
            return ObjectStream(await self.head(key), _no_chunks(), offset=offset, length=0)
        options: Any = None
        if offset or length is not None:
            options = {
                "range": (offset, offset + length) if length is not None else {"offset": offset}
            }

        async def open_once() -> Any:
            with self._translated(key):
                return await obs.get_async(self._store, key, options=options)

        result = await self._readable(self._retry(open_once, f"get {key}"), key)
        info = _info(result.meta)
        start, end = result.range

        async def chunks() -> AsyncIterator[bytes]:
            with self._translated(key):
                async for chunk in result.stream(min_chunk_size=chunk_size):
                    yield bytes(chunk)

        return ObjectStream(info, chunks(), offset=start, length=end - start)

    async def head(self, key: str) -> ObjectInfo:
        validate_key(key)

        async def head_once() -> ObjectMeta:
            with self._translated(key):
                return await obs.head_async(self._store, key)

        return _info(await self._retry(head_once, f"head {key}"))

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectNotFound:
            return False
        return True

    # Object stores list in key order, so a listing cut short resumes after its last key.
    sorted_listing = True

    async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        async for chunk in self._listing(prefix):
            yield [
                (
                    meta["path"],
                    meta["size"],
                    normal_etag(meta.get("e_tag")),
                    micros(meta["last_modified"]),
                    None,
                )
                for meta in chunk
            ]

    async def _listing(self, prefix: str) -> AsyncIterator[list[ObjectMeta]]:
        """obstore's listing in chunks, the store's own names left out; a listing cut
        short by a retryable error resumes after the last key it gave (keys up to that one
        are skipped should the store list them again: not every server honours the
        offset)."""
        validate_prefix(prefix)
        last: str | None = None
        failures = 0
        while True:
            resumed = last
            try:
                with self._translated():
                    stream = obs.list(
                        self._store,
                        prefix.rstrip("/") or None,
                        offset=last,
                        chunk_size=LIST_CHUNK,
                    )
                    async for chunk in self._pages(stream):
                        failures = 0  # a page came: the retries count again (per request)
                        metas = [meta for meta in chunk if self._listable(meta["path"])]
                        if resumed is not None:
                            metas = [meta for meta in metas if meta["path"] > resumed]
                        if chunk:
                            last = chunk[-1]["path"]
                        if metas:
                            yield metas
                return
            except StoreError as exc:
                failures += 1
                if isinstance(exc, StoreThrottled):
                    # the tier's next requests wait, this listing's next page too
                    self.limiter.throttled(exc.retry_after, failures)
                if not (exc.retryable and failures <= self.retries and self.sorted_listing):
                    raise
                if not isinstance(exc, StoreThrottled):
                    await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def _pages(self, stream: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """A listing's chunks, each page (a request: a chunk is at most one page) after
        its slot."""
        pages = aiter(stream)
        while True:
            await self.limiter.acquire()
            try:
                chunk = await anext(pages)
            except StopAsyncIteration:
                return
            yield chunk

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        async for chunk in self._listing(prefix):
            yield [_info(meta) for meta in chunk]

    def _listable(self, key: str) -> bool:
        return True

    async def delete_many(self, keys: Iterable[str]) -> None:
        batch = [validate_key(key) for key in keys]
        if not batch:
            return

        async def delete_once() -> None:
            for _ in range(math.ceil(len(batch) / DELETE_BATCH) - 1):
                await self.limiter.acquire()  # the requests after the first
            with self._translated():
                await obs.delete_async(self._store, batch)

        try:
            await self._retry(delete_once, f"delete {len(batch)} objects")
        except ObjectNotFound:
            # Some backends fail a batch on a missing key: gone counts as deleted.
            for key in batch:
                await self.delete(key)

    async def delete(self, key: str) -> None:
        """Delete one object; already gone counts as deleted."""
        validate_key(key)

        async def delete_once() -> None:
            with self._translated(key):
                await obs.delete_async(self._store, key)

        with suppress(ObjectNotFound):
            await self._retry(delete_once, f"delete {key}")

    async def copy(self, src_key: str, dst_key: str, *, overwrite: bool = True) -> None:
        validate_key(src_key)
        validate_key(dst_key)
        if not overwrite and await self.exists(dst_key):
            raise ObjectExists(f"an object already exists at {self.location}/{dst_key}")

        async def copy_once() -> None:
            with self._translated(src_key):
                await obs.copy_async(self._store, src_key, dst_key)

        await self._retry(copy_once, f"copy {src_key}")

    async def url(self, key: str) -> str:
        raise NotSupportedByStore(self.location)

    async def close(self) -> None:
        return None


class NotSupportedByStore(StoreConfigError):
    def __init__(self, where: str) -> None:
        super().__init__(
            f"{where} cannot produce URLs", hint="set public_url on the tier to serve its objects"
        )


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing


async def _slices(data: bytes, size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


async def _hashing(source: AsyncIterable[bytes], hasher: Hasher) -> AsyncIterator[bytes]:
    async for chunk in source:
        hasher.update(chunk)
        yield chunk


async def _read_file_chunks(path: Path, chunk_size: int) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def _info(meta: ObjectMeta) -> ObjectInfo:
    return ObjectInfo(
        key=meta["path"],
        size=meta["size"],
        modified=meta["last_modified"],
        etag=normal_etag(meta.get("e_tag")),
    )


MTIME_KEY = "mtime"  # what rclone writes: seconds since the epoch, with a fraction
CREATED_KEY = "shelflife_created"  # ISO 8601; a valid name for S3, Azure and GCS metadata


def stamp_metadata(stamps: Stamps) -> dict[str, str]:
    """An object's :class:`Stamps` as user metadata."""
    modified = stamps.modified.astimezone(UTC)
    seconds = int(modified.timestamp())
    return {
        MTIME_KEY: f"{seconds}.{modified.microsecond:06d}000",
        CREATED_KEY: stamps.created.astimezone(UTC).isoformat(),
    }


def read_stamps(metadata: Any, stored: datetime) -> Stamps | None:
    """The :class:`Stamps` in an object's metadata; None if it carries none.

    A value that does not parse is ignored (the store's own instant stands for it), and an
    instant later than the write (``stored``) cannot be the object's: it is capped there."""
    modified = created = None
    with suppress(KeyError, TypeError, ValueError, OverflowError):
        modified = datetime.fromtimestamp(float(metadata[MTIME_KEY]), UTC)
    with suppress(KeyError, TypeError, ValueError):
        created = datetime.fromisoformat(metadata[CREATED_KEY])
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
    if modified is None and created is None:
        return None
    modified = min(modified or stored, stored)
    created = min(created, stored) if created else modified
    return Stamps(created=created, modified=modified)


def normal_etag(etag: str | None) -> str | None:
    """One spelling per ETag: some servers quote it in a HEAD answer and not in a listing
    (Azurite does), and a weak one is the same version of the object."""
    if etag is None:
        return None
    return etag.removeprefix("W/").strip('"')


def split_bucket_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix``)."""
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreConfigError(f"{url} names no bucket or container")
    return bucket, prefix.strip("/")


def retry_config(tier: Any) -> RetryConfig:
    """The HTTP client retries nothing: shelflife retries each request itself, so that
    every attempt takes a slot from the tier's limiter and a throttling answer holds the
    tier (obstore's own retries would be unseen by the limiter and back off from 100 ms
    whatever the store asked for)."""
    return {
        "max_retries": 0,
        "retry_timeout": timedelta(minutes=3),
        "backoff": {
            "init_backoff": timedelta(seconds=INITIAL_WAIT),
            "max_backoff": timedelta(seconds=MAX_WAIT),
            "base": 2,
        },
    }


def client_options(tier: Any) -> ClientConfig:
    """HTTP client settings: plain http only when the endpoint says so, generous timeouts."""
    endpoint = tier.endpoint or ""
    allow_http = tier.allow_http if tier.allow_http is not None else endpoint.startswith("http://")
    return {"allow_http": allow_http, "timeout": "600s", "connect_timeout": "10s"}
