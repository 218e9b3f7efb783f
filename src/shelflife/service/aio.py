"""The async facade: :class:`AsyncShelf`, for applications that run an event loop
(FastAPI, aiohttp, Starlette).

It does what :class:`~shelflife.service.shelf.Shelf` does for ``put``, ``get``, ``open``,
``download``, ``url`` and ``delete``, with the same rules — keys validated, a key or any
reference value accepted, archived objects refused with
:class:`~shelflife.errors.ObjectArchived`, missing ones with
:class:`~shelflife.errors.ObjectNotFound`, catalog rows written, reads recorded for
least-recently-used ordering — without blocking the caller's loop:

- the stores are awaited on the caller's loop (obstore's async calls: ``put_async``,
  ``get_async`` and its streamed body, ``delete_async``, ``sign_async``; a local tier reads
  and writes its files in worker threads, see :meth:`LocalStore.open`);
- the catalog (SQLAlchemy, synchronous) is read in worker threads, and the writes of
  uploads are committed in groups by one writer thread
  (:class:`~shelflife.service.uploads.GroupCommit`), so a burst of concurrent puts costs a
  few transactions rather than two per put.

``await AsyncShelf.open(config)`` opens a configuration (and closes it with the
``AsyncShelf``); ``AsyncShelf(shelf)`` wraps a shelf already open (which stays open). Both
work as ``async with``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Generator
from pathlib import Path
from typing import Any, BinaryIO, Generic, Protocol, TypeVar, overload

from shelflife.base.keys import validate_key
from shelflife.base.units import utcnow
from shelflife.config import Config
from shelflife.errors import UsageError
from shelflife.model.locations import Location
from shelflife.service import actionlog
from shelflife.service.objects import resolve_async
from shelflife.service.shelf import Shelf
from shelflife.service.uploads import GroupCommit, StoredObject, UploadRecorder, put_object
from shelflife.stores import ObstoreStore
from shelflife.stores.base import ObjectStream, PutSource

READ_CHUNK = 1024 * 1024  # bytes a stream yields at a time unless told
_FILE_CHUNK = 8 * 1024 * 1024  # bytes read at a time from a file object given to put

Ref = str | Location
"""A key, any value a reference column holds, or a :class:`Location` already resolved."""

_Closable = TypeVar("_Closable", bound="_AsyncClosable")


class _AsyncClosable(Protocol):
    async def aclose(self) -> None: ...


class Opening(Generic[_Closable]):
    """Something being opened: ``await`` it for the value, or use it as ``async with``
    (which closes the value on the way out)."""

    def __init__(self, opening: Awaitable[_Closable]) -> None:
        self._opening = opening
        self._value: _Closable | None = None

    def __await__(self) -> Generator[Any, None, _Closable]:
        return self._opening.__await__()

    async def __aenter__(self) -> _Closable:
        self._value = await self._opening
        return self._value

    async def __aexit__(self, *exc_info: object) -> None:
        if self._value is not None:
            await self._value.aclose()


class _ShelfOpener(Protocol):
    def __call__(self, config: Config | str | Path | None = None) -> Opening[AsyncShelf]: ...


class _StreamOpener(Protocol):
    def __call__(
        self, ref: Ref, *, offset: int = 0, length: int | None = None, chunk_size: int = ...
    ) -> Opening[ObjectStream]: ...


class _OpenShelfOrStream:
    """``AsyncShelf.open(config)`` opens a shelf; ``shelf.open(ref)`` opens an object for
    streaming (as :class:`Shelf`'s ``open`` does, typed both ways)."""

    @overload
    def __get__(self, instance: None, owner: type[AsyncShelf]) -> _ShelfOpener: ...

    @overload
    def __get__(self, instance: AsyncShelf, owner: type[AsyncShelf]) -> _StreamOpener: ...

    def __get__(
        self, instance: AsyncShelf | None, owner: type[AsyncShelf]
    ) -> _ShelfOpener | _StreamOpener:
        if instance is None:
            return lambda config=None: Opening(owner.from_config(config))
        return instance._opener


class AsyncShelf:
    """A configuration opened for async code: objects stored, read, streamed, signed and
    deleted from a running event loop (see the module docstring)."""

    open = _OpenShelfOrStream()

    def __init__(self, shelf: Shelf, *, owns_shelf: bool = False) -> None:
        self.shelf = shelf
        self._owns_shelf = owns_shelf
        self._uploads: GroupCommit | None = None  # this facade's own, made on first put

    @classmethod
    async def from_config(cls, config: Config | str | Path | None = None) -> AsyncShelf:
        """Open a config file (or the one found by the usual search) or a Config; the
        catalog is opened (and migrated) in a worker thread."""
        shelf = await asyncio.to_thread(Shelf.from_config, config)
        return cls(shelf, owns_shelf=True)

    @property
    def config(self) -> Config:
        return self.shelf.config

    async def aclose(self) -> None:
        """Commit pending catalog writes; close the shelf if this facade opened it."""
        if self._uploads is not None:
            uploads, self._uploads = self._uploads, None
            await asyncio.to_thread(uploads.close)
        if self._owns_shelf:
            await asyncio.to_thread(self.shelf.close)

    async def __aenter__(self) -> AsyncShelf:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- finding objects ------------------------------------------------------------------

    def store(self, tier: str) -> ObstoreStore:
        """The store of a tier, opened on first use (UsageError for an unknown tier)."""
        return self.shelf.store(tier)

    async def resolve(self, ref: Ref) -> Location:
        """Where the object a key or reference value names lives today (see
        :meth:`Shelf.resolve`); a :class:`Location` is taken as resolved already."""
        if isinstance(ref, Location):
            validate_key(ref.key)
            self.store(ref.tier)
            return ref
        return await resolve_async(self.shelf.context, ref)

    async def record_access(self, location: Location) -> None:
        """Record a read for least-recently-used ordering: through the batcher a server
        installs (:attr:`Shelf.access`), else one write in a worker thread."""
        if self.shelf.access is not None:
            self.shelf.access(location.tier, location.key)
        else:
            await asyncio.to_thread(
                self.shelf.catalog.touch, location.tier, [location.key], utcnow()
            )

    # -- objects --------------------------------------------------------------------------

    async def put(
        self,
        source: str | Path | bytes | AsyncIterable[bytes] | BinaryIO,
        key: str | None = None,
        *,
        tier: str | None = None,
        overwrite: bool = True,
        tags: dict[str, str] | None = None,
    ) -> StoredObject:
        """Store a file, bytes, an async iterable of chunks or a binary file object (read
        in a worker thread); return where it went and the value a row should hold.

        As :meth:`Shelf.put`: an upload lease first, then the write, then the inventory
        row; the object is acknowledged only once it is in the catalog."""
        tier = tier or self.config.default_tier
        if key is None:
            if isinstance(source, str | Path):
                key = Path(source).name
            else:
                raise UsageError("a key is needed when storing bytes or a stream")
        validate_key(key)
        self.store(tier)  # an unknown tier is refused before anything is read
        payload: PutSource
        if isinstance(source, str | Path):
            path = Path(source)
            if not await asyncio.to_thread(path.is_file):
                raise UsageError(f"{path} is not a file", hint="give the path of a file to store")
            payload = path
        elif isinstance(source, bytes | bytearray | memoryview):
            payload = bytes(source)
        elif isinstance(source, AsyncIterable):
            payload = source
        else:
            payload = _read_in_thread(source)
        stored = await put_object(
            self.shelf.context,
            payload,
            key,
            tier=tier,
            overwrite=overwrite,
            recorder=self._recorder(),
        )
        if tags:
            await asyncio.to_thread(self.shelf.catalog.set_tags, tier, key, tags)
        return stored

    def _recorder(self) -> UploadRecorder:
        """The server's group commit when one is installed, else this facade's own."""
        if self.shelf.uploads is not None:
            return self.shelf.uploads
        if self._uploads is None:
            self._uploads = GroupCommit(self.shelf.catalog)
        return self._uploads

    async def get(self, ref: Ref) -> bytes:
        """The object's bytes, in memory: use :meth:`open` or :meth:`download` for large
        ones."""
        location = await self.resolve(ref)
        data = await self.store(location.tier).get_bytes(location.key)
        await self.record_access(location)
        return data

    async def open_object(
        self,
        ref: Ref,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = READ_CHUNK,
    ) -> ObjectStream:
        """The object opened for streaming (``shelf.open(ref)`` spells it too): its size
        and ETag in ``stream.info``, its bytes as they arrive (``async for``), about one
        chunk in memory at a time. ObjectNotFound or ObjectArchived is raised here, before
        anything is read. ``offset`` and ``length`` select a range of the object."""
        location = await self.resolve(ref)
        store = self.store(location.tier)
        stream = await store.open(location.key, offset=offset, length=length, chunk_size=chunk_size)
        try:
            await self.record_access(location)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def _opener(
        self, ref: Ref, *, offset: int = 0, length: int | None = None, chunk_size: int = READ_CHUNK
    ) -> Opening[ObjectStream]:
        return Opening(self.open_object(ref, offset=offset, length=length, chunk_size=chunk_size))

    async def download(self, ref: Ref, dest: str | Path) -> Path:
        """Stream the object into a file (or into a folder, under its name); return the
        file. It appears whole or not at all (written beside it, then renamed)."""
        target = Path(dest)
        async with self.open(ref, chunk_size=8 * 1024 * 1024) as stream:
            if await asyncio.to_thread(target.is_dir):
                target = target / Path(stream.info.key).name
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            await _write_file(stream, target)
        return target

    async def url(self, ref: Ref) -> str:
        """A URL for the object: public on a local tier, freshly presigned on object stores
        (ObjectArchived for an archived object, whose URL would be refused)."""
        location = await self.resolve(ref)
        url = await self.store(location.tier).url(location.key)
        await self.record_access(location)
        return url

    async def delete(self, ref: Ref) -> Location:
        """Delete the object from its tier and the inventory; already gone from the store
        is not an error."""
        location = await self.resolve(ref)
        held = await asyncio.to_thread(actionlog.sizes, self.shelf.context, [location])
        await self.store(location.tier).delete(location.key)
        await asyncio.to_thread(self.shelf.catalog.forget, location.tier, [location.key])
        await self._log_deletions(held)
        return location

    async def copies(self, ref: Ref) -> list[Location]:
        """Every tier's copy of the key ``ref`` resolves to, the resolved one first (as
        :meth:`Shelf.delete_copies` finds them)."""
        location = await self.resolve(ref)
        found = [location]
        for name in self.shelf.config.tiers:
            if name == location.tier:
                continue
            known = await asyncio.to_thread(self.shelf.catalog.get, name, location.key)
            if known is not None or await self.store(name).exists(location.key):
                found.append(Location(name, location.key))
        return found

    async def delete_copies(
        self,
        copies: list[Location],
        *,
        forced: bool = False,
        command: str = "delete",
        by: str | None = None,
    ) -> None:
        """Delete each of ``copies`` (from :meth:`copies`): no older copy on another tier
        comes back after a delete. Logged as ``command`` (``by``: who asked)."""
        held = await asyncio.to_thread(actionlog.sizes, self.shelf.context, copies)
        for copy in copies:
            await self.store(copy.tier).delete(copy.key)
            await asyncio.to_thread(self.shelf.catalog.forget, copy.tier, [copy.key])
        await self._log_deletions(held, forced=forced, command=command, by=by)

    async def _log_deletions(
        self,
        copies: dict[Location, int | None],
        *,
        forced: bool = False,
        command: str = "delete",
        by: str | None = None,
    ) -> None:
        entries = actionlog.deletions(copies, command, forced=forced, by=by)
        await asyncio.to_thread(actionlog.record, self.shelf.context, entries)


async def _read_in_thread(stream: BinaryIO) -> AsyncIterator[bytes]:
    """A blocking file object's chunks, each read in a worker thread."""
    while chunk := await asyncio.to_thread(stream.read, _FILE_CHUNK):
        yield chunk


async def _write_file(stream: ObjectStream, target: Path) -> None:
    fd, temp = await asyncio.to_thread(
        tempfile.mkstemp, dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    handle = os.fdopen(fd, "wb")
    try:
        async for chunk in stream:
            await asyncio.to_thread(handle.write, chunk)
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(os.replace, temp, target)
    except BaseException:
        handle.close()
        await asyncio.to_thread(_unlink, temp)
        raise


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)


__all__ = ["AsyncShelf", "Opening", "Ref"]
