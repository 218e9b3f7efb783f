"""The one Store protocol every backend implements, and the values it speaks in.

Stores are async: transfers run concurrently on one event loop, and obstore (the data
plane of every backend) is fastest that way. Synchronous callers go through
:func:`shelflife.base.aio.run_sync`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

PutSource = bytes | Path | AsyncIterable[bytes]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store says about one object.

    ``modified`` is the object's modification instant as the store keeps it: a local
    tier's mtime (kept across moves), an object store's Last-Modified (the write, so the
    instant the object arrived there). ``arrived``, where the store knows it apart from
    ``modified``, is when the object entered this store (a local file's ctime)."""

    key: str
    size: int
    modified: datetime
    etag: str | None = None
    arrived: datetime | None = None


# One object of a listing as a scan compares it with the inventory, in the catalog's own
# terms: (key, size, etag, modified µs since the epoch, arrived µs or None). A plain tuple:
# a scan of a million objects builds a million of them, and compares most of them only.
Entry = tuple[str, int, str | None, int, int | None]


def entry_of(info: ObjectInfo) -> Entry:
    """An :class:`ObjectInfo` as a listing :data:`Entry`."""
    return (
        info.key,
        info.size,
        info.etag,
        micros(info.modified),
        None if info.arrived is None else micros(info.arrived),
    )


def micros(instant: datetime) -> int:
    """Microseconds since the epoch of an aware instant (how the catalog stores them)."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Stamps:
    """The instants an object keeps wherever it moves (DESIGN I9).

    ``created`` is when the object was first seen or written anywhere; ``modified`` when
    its bytes last changed. A copy carries both: a local tier sets its file's mtime to
    ``modified``; an object store keeps them in the object's metadata (``mtime`` in
    seconds since the epoch, as rclone writes it, and ``shelflife_created``), so a
    catalog rebuilt by a scan finds them again."""

    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a completed write produced: size and SHA-256 of the bytes written; where the
    store can vouch for them, the proofs it may report (:mod:`shelflife.stores.proofs`).

    ``vouched``: the write's own answer proves the store holds exactly these bytes, so
    nothing needs reading back — a local file written, fsynced and renamed into place at
    the size sent; an S3 upload whose ETag is the MD5 of the bytes sent."""

    key: str
    size: int
    checksum: str
    etag: str | None = None
    proofs: frozenset[str] = frozenset()
    vouched: bool = False


@runtime_checkable
class Store(Protocol):
    """A place where bytes live, addressed by validated keys relative to its root."""

    location: str
    """The store's canonical URL (``s3://bucket/prefix``, ``file:///abs/path``)."""

    async def put(
        self,
        key: str,
        source: PutSource,
        *,
        overwrite: bool = True,
        stamps: Stamps | None = None,
        multipart: bool | None = None,
    ) -> PutResult:
        """Write an object atomically, streaming ``source``; return its size and checksum.

        With ``overwrite=False`` an existing object is left alone and ObjectExists raised.
        With ``stamps`` the object carries its created and modified instants (a copy).
        ``multipart`` says whether bytes in memory go up in parts (None: above the tier's
        ``multipart_threshold``); a stream always does, where the store has parts.
        """
        ...

    async def stamps(self, key: str) -> Stamps | None:
        """The :class:`Stamps` a copy carries, if the object has any."""
        ...

    def get(self, key: str, *, chunk_size: int = ...) -> AsyncIterator[bytes]:
        """Stream an object's bytes; raise ObjectNotFound if it is absent."""
        ...

    async def open(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = ...
    ) -> ObjectStream:
        """Open an object for streaming: ObjectNotFound (or ObjectArchived) is raised here,
        before any byte is read, and the stream knows the object's size and ETag. With
        ``offset`` and ``length`` it yields that range of the object only."""
        ...

    async def get_bytes(self, key: str) -> bytes:
        """The whole object in memory: only for objects known to be small."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; already gone counts as deleted (idempotent)."""
        ...

    async def head(self, key: str) -> ObjectInfo:
        """Size, modified time and ETag of one object; ObjectNotFound if absent."""
        ...

    sorted_listing: bool
    """Whether :meth:`list` and :meth:`entries` yield keys in UTF-8 byte order."""

    def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        """:meth:`list` as :data:`Entry` tuples, the form a scan compares."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        """Stream the objects under ``prefix`` in chunks; memory stays bounded."""
        ...

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete objects; keys already gone count as deleted (idempotent)."""
        ...

    async def copy(self, src_key: str, dst_key: str, *, overwrite: bool = True) -> None:
        """Copy within this store, server-side where the store can."""
        ...

    async def url(self, key: str) -> str:
        """A URL a client can fetch: presigned for object stores, public for local tiers."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


class ObjectStream:
    """An object opened for reading: what the store says about it (:attr:`info`, the
    whole object's size, ETag and modification instant) and its bytes as they arrive.

    Iterate it (``async for chunk in stream``) once; memory stays at about one chunk. Use
    it as ``async with`` (or call :meth:`aclose`) to release the file or connection when
    the stream is left before its end."""

    def __init__(
        self,
        info: ObjectInfo,
        chunks: AsyncIterator[bytes],
        *,
        offset: int = 0,
        length: int,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self.offset = offset  # where in the object the stream starts
        self.length = length  # how many bytes it yields
        self._chunks = chunks
        self._release = release  # frees what the stream holds, even if never iterated

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def read(self) -> bytes:
        """The rest of the stream in memory."""
        return b"".join([chunk async for chunk in self._chunks])

    async def aclose(self) -> None:
        """Stop reading and release the file or connection (again: nothing happens)."""
        aclose = getattr(self._chunks, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            if self._release is not None:
                self._release()

    async def __aenter__(self) -> ObjectStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
