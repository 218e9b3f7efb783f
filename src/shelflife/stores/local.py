"""``file://`` tiers: a folder on a local or mounted filesystem.

A tier is its folder and nothing outside it: symbolic links inside the folder are never
followed. Listings skip them (and say how many they skipped), a key whose path passes
through one names no object, and nothing is written through one. The check resolves the
path just before each operation; a local user able to swap a folder for a link between
that check and the operation could still race it (an object store has no such links).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import importlib
import logging
import os
import re
import secrets
import shutil
import stat
import time
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO
from urllib.parse import quote

from obstore.store import LocalStore as _ObLocalStore

from shelflife.base.keys import MAX_KEY_BYTES, validate_key, validate_prefix
from shelflife.config.model import TierConfig
from shelflife.errors import (
    InvalidKeyError,
    ObjectExists,
    ObjectNotFound,
    StoreConfigError,
    StoreTransient,
)
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import Entry, ObjectInfo, ObjectStream, PutResult, PutSource, Stamps

log = logging.getLogger("shelflife.stores")

COPY_CHUNK = 4 * 1024 * 1024
# Entries a walk gathers in its thread before handing them over (one thread hop each).
WALK_CHUNK = 5000
# Folders are read by this many threads, the next READ_AHEAD folders of each folder
# ahead of the walk: reading a folder is mostly the kernel's work (readdir, a stat per
# file, without the GIL), which two threads do in about 0.6 of the time of one.
# Only folders less than READ_AHEAD_DEPTH deep read ahead: below, a walk holds one
# folder open per level, as a deep tree needs (three per level would reach the limit
# of open files three times sooner).
READERS = 2
READ_AHEAD = 2
READ_AHEAD_DEPTH = 16
NAME_MAX = 255  # bytes in one file name on Linux filesystems
# obstore writes a local object to "<path>#<n>" and renames it; such names are not listed.
_STAGING_SUFFIX = re.compile(r"#\d+$")


class LocalStore(ObstoreStore):
    """Objects as files under ``root``; writes go to a temporary file, then rename."""

    sorted_listing = True  # the walk visits names in the order their keys sort (see _walk)
    carries_stamps = False  # a copy keeps its source's mtime; the listing reads it

    def __init__(self, root: Path, *, public_url: str | None = None, create: bool = True) -> None:
        if not root.is_absolute():
            raise StoreConfigError(f"local store root {root} must be an absolute path")
        if not create and not root.is_dir():
            raise StoreConfigError(
                f"the folder {root} does not exist"
                if not root.exists()
                else f"{root} is not a folder",
                hint=f"create it (mkdir -p {root}), fix the tier's url, or set create = true "
                "on the tier to have shelflife create it",
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(
                f"cannot create the folder {root}: {exc.strerror}",
                hint="create it yourself, or give the user running shelflife write access",
            ) from None
        self.root = root
        self._real_root = os.path.realpath(root)
        self.public_url = public_url
        super().__init__(_ObLocalStore(prefix=root, automatic_cleanup=True), "file://" + str(root))

    @classmethod
    def from_tier(cls, tier: TierConfig) -> LocalStore:
        return cls(
            Path(tier.url.removeprefix("file://")), public_url=tier.public_url, create=tier.create
        )

    async def put(
        self,
        key: str,
        source: PutSource,
        *,
        overwrite: bool = True,
        stamps: Stamps | None = None,
        multipart: bool | None = None,  # a file has no parts
    ) -> PutResult:
        """Stream into a staging file beside the target, fsync, then rename into place.

        Memory stays at one chunk whatever the size. The staging name ends in ``#<digits>``,
        which listings skip, so a half-written file is never taken for an object: a crash
        leaves at most such a staging file, never a partial object under the key. With
        ``stamps`` the file keeps the source's modification time (as ``cp -p`` does).
        """
        if isinstance(source, bytes | bytearray | memoryview) and stamps is None:
            return await asyncio.to_thread(self._put_whole, key, source, overwrite)
        target, staging = self._write_paths(key)
        digest = hashlib.sha256()
        with self._writing(key), _folder_collision(key):
            created = await asyncio.to_thread(_make_folders, target.parent)
            handle = await asyncio.to_thread(open, staging, "xb")
            try:
                size = await self._write_all(handle, source, digest)
                await asyncio.to_thread(_flush_and_sync, handle)
                if stamps is not None:
                    await asyncio.to_thread(_set_mtime, staging, stamps.modified)
            except BaseException:
                await asyncio.to_thread(_discard, handle, staging)
                raise
            handle.close()
            try:
                await asyncio.to_thread(_publish, staging, target, overwrite, created)
            except FileExistsError:
                raise ObjectExists(f"an object already exists at {self.location}/{key}") from None
        info = await self.head(key)
        # Hashed as written, fsynced, renamed into place, found at that size: vouched.
        vouched = info.size == size
        return PutResult(key, size, "sha256:" + digest.hexdigest(), info.etag, vouched=vouched)

    def _write_paths(self, key: str) -> tuple[Path, Path]:
        """The file a write of ``key`` publishes and the staging file it writes first,
        once the key is known to be writable here."""
        self._check_local_key(key)
        try:
            self._no_links(key)
        except LinkedPath as exc:
            raise _unwritable(exc) from None
        target = self.root / key
        return target, target.with_name(f"{target.name}#{secrets.randbelow(10**12)}")

    def _put_whole(
        self, key: str, data: bytes | bytearray | memoryview, overwrite: bool
    ) -> PutResult:
        """:meth:`put` of bytes in hand, as one blocking call: the same checks and steps
        (folders, staging file, fsync, publish, folder fsyncs) for one hop to a worker
        thread rather than one per step, which is most of what a small upload costs."""
        target, staging = self._write_paths(key)
        with self._writing(key), _folder_collision(key):
            created = _make_folders(target.parent)
            handle = open(staging, "xb")  # noqa: SIM115 (closed by _discard or below)
            try:
                handle.write(data)
                _flush_and_sync(handle)
            except BaseException:
                _discard(handle, staging)
                raise
            handle.close()
            try:
                _publish(staging, target, overwrite, created)
            except FileExistsError:
                raise ObjectExists(f"an object already exists at {self.location}/{key}") from None
            info = _stat_info(key, os.lstat(target))
        return PutResult(key, len(data), "sha256:" + hashlib.sha256(data).hexdigest(), info.etag)

    async def stamps(self, key: str) -> Stamps | None:
        """A file carries its modification time and nothing more: the listing has it."""
        return None

    async def get(self, key: str, *, chunk_size: int = COPY_CHUNK) -> AsyncIterator[bytes]:
        """Read the file in chunks (obstore's local stream buffers far more than one chunk)."""
        self.path(key)
        with self._translated(key):
            handle = await asyncio.to_thread(open, self.root / key, "rb")
            try:
                while chunk := await asyncio.to_thread(handle.read, chunk_size):
                    yield chunk
            finally:
                handle.close()

    async def open(
        self, key: str, *, offset: int = 0, length: int | None = None, chunk_size: int = COPY_CHUNK
    ) -> LocalStream:
        """Open the file (never through a link) and read it in chunks in a worker thread.

        Plain reads in a thread rather than obstore's local stream: that stream buffers
        far more than one chunk and resolves links, and a local read is blocking system
        calls either way (obstore runs them on its own blocking pool).

        The stream promises ``stream.length`` bytes, those of the file as it was opened:
        a file shortened while it is read raises :class:`~shelflife.errors.StoreTransient`
        rather than ending early. Before it is read, :meth:`LocalStream.select` narrows
        it to a range worked out from ``stream.info`` (the opened file's size)."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        path = self.path(key)
        with self._translated(key):
            try:
                opened = await asyncio.to_thread(_open_regular, path, offset)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise LinkedPath(f"{self.location}/{key}") from None
                raise
        if opened is None:
            raise ObjectNotFound(f"no object at {self.location}/{key}")
        handle, meta = opened
        return LocalStream(self, key, handle, meta, offset, length, chunk_size)

    async def _chunks(
        self, key: str, handle: BinaryIO, start: int | None, size: int, chunk_size: int
    ) -> AsyncIterator[bytes]:
        """``size`` bytes of ``handle`` (from ``start`` when given, else where it stands);
        StoreTransient if the file ends before them."""
        try:
            left = size
            with self._translated(key):
                if start is not None:
                    await asyncio.to_thread(handle.seek, start)
                while left > 0:
                    chunk = await asyncio.to_thread(handle.read, min(chunk_size, left))
                    if not chunk:
                        raise StoreTransient(
                            f"{self.location}/{key} changed while being read: it ended "
                            f"{left} bytes short of the {size} expected",
                            hint="try again: the object was rewritten or truncated meanwhile",
                        )
                    left -= len(chunk)
                    yield chunk
        finally:
            handle.close()

    async def _write_all(self, handle: BinaryIO, source: PutSource, digest: Any) -> int:
        if isinstance(source, bytes | bytearray | memoryview):
            digest.update(source)
            await asyncio.to_thread(handle.write, source)
            return len(source)
        if isinstance(source, Path):
            return await asyncio.to_thread(_copy_file, source, handle, digest)
        size = 0
        async for chunk in source:
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(handle.write, chunk)
        return size

    def _check_local_key(self, key: str) -> None:
        validate_key(key)
        longest = max(len(segment.encode()) for segment in key.split("/"))
        if longest > NAME_MAX:
            raise InvalidKeyError(
                f"a segment of key {key[:60]!r}… is {longest} bytes; a local filesystem "
                f"allows at most {NAME_MAX} bytes per file or folder name",
                hint="split long names with '/' or store such keys on an object-store tier",
            )
        if _STAGING_SUFFIX.search(key):
            raise InvalidKeyError(
                f"key {key[:80]!r} ends in '#' and digits, which a local tier reserves for "
                "files being written",
                hint="rename the object, or store it on an object-store tier",
            )

    def path(self, key: str) -> Path:
        """The file that holds ``key`` (it may not exist); LinkedPath (an ObjectNotFound)
        if reaching it means following a symbolic link, ObjectNotFound if a segment is too
        long to be a file name here (no such file can exist)."""
        validate_key(key)
        if any(len(segment.encode()) > NAME_MAX for segment in key.split("/")):
            raise ObjectNotFound(
                f"no object at {self.location}/{key[:80]}…: a segment is longer than a file "
                f"name can be ({NAME_MAX} bytes)"
            )
        self._no_links(key)
        return self.root / key

    def _no_links(self, key: str) -> None:
        target = os.path.join(self._real_root, key)
        parent = os.path.dirname(target)
        if os.path.realpath(parent) != parent or os.path.islink(target):
            raise LinkedPath(f"{self.location}/{key}")

    async def head(self, key: str) -> ObjectInfo:
        """A stat of the file: no need to open it (nor read permission)."""
        path = self.path(key)
        with self._translated(key):
            meta = await asyncio.to_thread(os.lstat, path)
        if not stat.S_ISREG(meta.st_mode):
            raise ObjectNotFound(f"no object at {self.location}/{key}")
        return _stat_info(key, meta)

    async def get_bytes(self, key: str) -> bytes:
        self.path(key)
        return await super().get_bytes(key)

    async def delete(self, key: str) -> None:
        """Delete one object; gone (or reached only through a link) counts as deleted."""
        try:
            self.path(key)
        except LinkedPath:
            log.warning("not deleting %s/%s: its path passes through a symbolic link", self, key)
            return
        except ObjectNotFound:
            return  # a name no file here can have
        await super().delete(key)

    async def delete_many(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        linked = set()
        impossible = set()
        for key in batch:
            try:
                self.path(key)
            except LinkedPath:
                linked.add(key)
            except ObjectNotFound:
                impossible.add(key)  # a name no file here can have: nothing to delete
        if linked:
            log.warning(
                "not deleting %d keys of %s reached through symbolic links", len(linked), self
            )
        await super().delete_many([key for key in batch if key not in linked | impossible])

    async def copy(self, src_key: str, dst_key: str, *, overwrite: bool = True) -> None:
        self.path(src_key)
        try:
            self.path(dst_key)
        except LinkedPath as exc:
            raise _unwritable(exc) from None
        await super().copy(src_key, dst_key, overwrite=overwrite)

    async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        """The walk of :meth:`list`, as the tuples a scan compares, in key order."""
        prefix = validate_prefix(prefix).rstrip("/")
        top = os.path.join(self._real_root, prefix) if prefix else self._real_root
        runs = _walk_runs(self._real_root, top)
        skipped = [0]

        def next_chunk() -> list[Entry]:
            chunk: list[Entry] = []
            for run, links in runs:
                skipped[0] += links
                chunk += run
                if len(chunk) >= WALK_CHUNK:
                    break
            return chunk

        # The next chunk is walked while the caller works on this one: reading a folder
        # holds the GIL only to build its entries (see _read_folder).
        ahead = asyncio.ensure_future(asyncio.to_thread(next_chunk))
        try:
            with self._translated():
                # shielded: a cancelled scan must not mark the chunk in flight done while
                # its thread still walks (the walk would be closed under it)
                while chunk := await asyncio.shield(ahead):
                    ahead = asyncio.ensure_future(asyncio.to_thread(next_chunk))
                    yield chunk
        finally:
            # the walk is not shared between threads: wait for the one in flight
            await asyncio.gather(ahead, return_exceptions=True)
            runs.close()
        if skipped[0]:
            log.warning(
                "skipped %d symbolic links under %s: a local tier never follows links",
                skipped[0],
                self.location,
            )

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        """Walk the folder without following links (obstore's walk follows them)."""
        async for chunk in self.entries(prefix):
            yield [_entry_info(entry) for entry in chunk]

    def disk_size(self) -> int:
        """Total size in bytes of the filesystem holding this tier."""
        return shutil.disk_usage(self.root).total

    def disk_used(self) -> int:
        """Bytes in use on the filesystem holding this tier (by anything)."""
        usage = shutil.disk_usage(self.root)
        return usage.total - usage.free

    async def url(self, key: str) -> str:
        validate_key(key)
        if self.public_url:
            return self.public_url.replace("{key}", quote(key, safe="/"))
        return self.path(key).as_uri()


class LocalStream(ObjectStream):
    """A file of a local tier opened for reading (see :meth:`LocalStore.open`)."""

    def __init__(
        self,
        store: LocalStore,
        key: str,
        handle: BinaryIO,
        meta: os.stat_result,
        offset: int,
        length: int | None,
        chunk_size: int,
    ) -> None:
        self._store, self._key, self._handle, self._chunk_size = store, key, handle, chunk_size
        self._size = meta.st_size
        start, size = self._span(offset, length)
        super().__init__(
            _stat_info(key, meta),
            store._chunks(key, handle, None, size, chunk_size),
            offset=start,
            length=size,
            release=handle.close,
        )
        self._selectable = True

    def _span(self, offset: int, length: int | None) -> tuple[int, int]:
        start = min(offset, self._size)
        left = self._size - start
        return start, left if length is None else min(length, left)

    def select(self, offset: int, length: int | None = None) -> None:
        """Read ``length`` bytes (the rest when None) from ``offset`` of the file opened,
        whatever has replaced it at its path since; only before the stream is read."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if not self._selectable:
            raise RuntimeError("a range is selected before the stream is read")
        self.offset, self.length = self._span(offset, length)
        # the generator made at open never started: nothing of it to close
        self._chunks = self._store._chunks(
            self._key, self._handle, self.offset, self.length, self._chunk_size
        )

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._selectable = False
        return super().__aiter__()

    async def read(self) -> bytes:
        self._selectable = False
        return await super().read()


class LinkedPath(ObjectNotFound):
    """A key whose path passes through a symbolic link: no object of this tier."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"no object at {where}: its path passes through a symbolic link, which a local "
            "tier never follows",
            hint="store the object inside the tier's folder instead of linking to it",
        )


def _unwritable(exc: LinkedPath) -> InvalidKeyError:
    return InvalidKeyError(
        f"cannot write {exc.where}: its path passes through a symbolic link, which a local "
        "tier never follows",
        hint=exc.hint,
    )


# A file name that cannot end a key (a control character or a backslash), or a staging
# file of a write in progress.
_UNLISTED_NAME = re.compile("[\x00-\x1f\x7f-\x9f\\\\]|#\\d+$")
_UNLISTED_FOLDER = re.compile("[\x00-\x1f\x7f-\x9f\\\\]")


def _walk(root: str, top: str) -> Iterator[Entry | None]:
    """Every entry of :func:`_walk_runs`, one at a time; ``None`` for each link passed by."""
    for run, links in _walk_runs(root, top):
        yield from run
        for _ in range(links):
            yield None


def _walk_runs(root: str, top: str) -> Generator[tuple[list[Entry], int], None, None]:
    """Every regular file under ``top`` as an :data:`Entry` of the tier rooted at ``root``,
    in UTF-8 byte order of the keys, never entering a link: runs of entries, each with the
    number of links passed by since the run before. Staging files of writes in progress
    and names that cannot be keys are left out.

    Byte order from a walk: the names of one folder are sorted with a folder's name
    standing as ``name/`` (so ``a-c`` < ``a.b`` < ``a/…`` < ``a0``, as the keys compare)
    and each folder is walked where its name falls. Python compares strings by code
    point, which is the UTF-8 byte order (names that are not UTF-8 are never keys).

    Folders are opened relative to their parent with ``O_NOFOLLOW`` and files are
    ``stat``-ed relative to their folder: a folder swapped for a link during the walk is
    not entered, and no path is resolved from the root again for every file. Each name is
    checked once, not each key: a name read from a folder has no ``/`` and is never
    empty, ``.`` or ``..``; its folder's path was checked on the way in. A folder is read
    in one call (:func:`_read_folder`) and its names are checked together
    (:func:`_keyed`). The next :data:`READ_AHEAD` folders of each folder on the way are
    opened and read by :data:`READERS` threads while the walk hands out what comes
    before them; a walk closed early closes them too."""
    prefix = top[len(root) + 1 :] + "/" if top != root else ""
    try:
        fd = os.open(top, _FOLDER_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return  # gone meanwhile (or the prefix names a file): nothing under it
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return  # the prefix is a link: not part of the tier
        raise
    readers = ThreadPoolExecutor(READERS, thread_name_prefix="shelflife-walk")
    stack: list[_Folder] = []
    try:
        stack.append(_Folder(fd, prefix, len(prefix.encode())))
        stack[0].limit = READ_AHEAD
        stack[0].read_ahead(readers)
        while stack:
            folder = stack[-1]
            if folder.next < len(folder.folders):
                run, links = folder.run_before(folder.folders[folder.next])
                if run or links:
                    yield run, links
                inner = folder.enter(readers)
                if inner is not None:
                    if len(stack) < READ_AHEAD_DEPTH:
                        inner.limit = READ_AHEAD
                        inner.read_ahead(readers)
                    stack.append(inner)
                continue
            run, links = folder.run_before(None)
            if run or links:
                yield run, links
            stack.pop().close()
    finally:
        for folder in stack:
            folder.close()
        readers.shutdown(wait=True)


def _child(parent: int, name: str, prefix: str, used: int) -> _Folder | None:
    """Folder ``name`` of the folder open as ``parent``, opened and read (None: gone, a
    link, or a name no key passes through)."""
    fd = _open_folder(parent, name)
    if fd is None:
        return None
    return _Folder(fd, prefix + name + "/", used + len(name.encode()) + 1)


class _Folder:
    """One folder of a walk: its files as entries in key order, its folders in the order
    their names sort as ``name/``, and how far the walk has come through both."""

    __slots__ = (
        "ahead",
        "at",
        "entries",
        "fd",
        "folders",
        "keys",
        "limit",
        "links",
        "next",
        "prefix",
        "used",
    )

    def __init__(self, fd: int, prefix: str, used: int) -> None:
        try:
            files, folders, links = _read_folder(fd, prefix)
        except OSError:
            os.close(fd)
            raise
        files.sort()  # by key: a folder's names are unique
        self.fd, self.prefix, self.used = fd, prefix, used
        self.entries = _keyed(prefix, used, files)
        self.folders = sorted(
            (name for name in folders if name.isascii() or _utf8(name)), key=_as_folder
        )
        # where each folder falls among the files (only when there are folders)
        self.keys = list(map(_KEY, self.entries)) if self.folders else []
        self.links = links
        self.next = 0  # the next folder to enter
        self.at = 0  # the first file not yet handed out
        self.ahead: deque[Future[_Folder | None]] = deque()  # its next folders, being read
        self.limit = 0  # how many of them are read ahead (set by the walk)

    def read_ahead(self, readers: ThreadPoolExecutor) -> None:
        """Have the next :attr:`limit` folders of this one read by ``readers``."""
        while len(self.ahead) < self.limit and self.next + len(self.ahead) < len(self.folders):
            name = self.folders[self.next + len(self.ahead)]
            self.ahead.append(readers.submit(_child, self.fd, name, self.prefix, self.used))

    def enter(self, readers: ThreadPoolExecutor) -> _Folder | None:
        """The next of this folder's folders, read (None: not one to walk); the ones after
        it are read meanwhile, if this folder reads ahead (topped up here: the walk asked
        for the first ones when it entered this folder)."""
        name = self.folders[self.next]
        self.next += 1
        if not self.ahead:  # deep in the tree: read here, one folder open per level
            return _child(self.fd, name, self.prefix, self.used)
        inner = self.ahead.popleft()
        self.read_ahead(readers)
        return inner.result()

    def close(self) -> None:
        """Close this folder and the folders read ahead of the walk."""
        while self.ahead:
            pending = self.ahead.popleft()
            if pending.cancel():
                continue
            try:
                inner = pending.result()
            except Exception:  # closing: the walk's own error is what is raised
                continue
            if inner is not None:
                inner.close()
        os.close(self.fd)

    def run_before(self, name: str | None) -> tuple[list[Entry], int]:
        """The files not handed out yet that sort before folder ``name`` (None: all), and
        the folder's links if not yet counted."""
        if name is None:
            end = len(self.entries)
        else:
            end = bisect_left(self.keys, self.prefix + name + "/", self.at)
        run = self.entries[self.at : end]
        self.at = end
        links, self.links = self.links, 0
        return run, links


def _as_folder(name: str) -> str:
    return name + "/"


_KEY = itemgetter(0)

# Any of a folder's keys joined by "/" that _UNLISTED_NAME would leave out: a name with
# a control character or a backslash, or a staging name (its "#<digits>" before a "/" or
# the end; a folder of the prefix so named only sends the folder name by name).
_UNLISTED_JOINED = re.compile("[\x00-\x1f\x7f-\x9f\\\\]|#\\d+(?:/|$)")


def _keyed(prefix: str, used: int, files: list[Entry]) -> list[Entry]:
    """A folder's ``files`` (keyed under ``prefix``, ``used`` bytes), in their order, less
    the names no key can end with: staging files of writes in progress, control
    characters, backslashes, names that are not UTF-8 and keys longer than keys may be.
    The keys are checked together (one search over them joined); a folder with any such
    name, or with keys long enough to need counting their bytes, is checked name by name,
    which decides the same."""
    if not files:
        return files
    joined = "/".join(map(_KEY, files))
    if (
        (joined.isascii() or _utf8(joined))
        and _UNLISTED_JOINED.search(joined) is None
        and 4 * max(map(len, map(_KEY, files))) <= MAX_KEY_BYTES
    ):
        return files
    start = len(prefix)
    return [file for file in files if _a_key_name(file[0][start:], used)]


def _a_key_name(name: str, used: int) -> bool:
    """Whether a file ``name`` can end a key whose folders take ``used`` bytes."""
    if not name.isascii() and not _utf8(name):
        return False  # not UTF-8: no key can name it
    if _UNLISTED_NAME.search(name) is not None:
        return False
    return used + 4 * len(name) <= MAX_KEY_BYTES or used + len(name.encode()) <= MAX_KEY_BYTES


def _read_folder_py(fd: int, prefix: str) -> tuple[list[Entry], list[str], int]:
    """What ``shelflife.stores._folder.read_folder`` gives, in Python: the regular files of
    the folder open as ``fd`` as (prefix + name, size, etag, modified µs, arrived µs), in
    the order it lists them, its folders' names and how many links it holds. The ETag is the one
    obstore gives the same file (inode, mtime in µs, size, in hexadecimal); a file's
    arrival is when its inode changed last, if after its mtime (a copy that keeps its
    source's mtime still gets a new ctime)."""
    files: list[Entry] = []
    folders: list[str] = []
    links = 0
    with os.scandir(fd) as scan:
        found = list(scan)
    for entry in found:
        if entry.is_symlink():
            links += 1
        elif entry.is_dir(follow_symlinks=False):
            folders.append(entry.name)
        elif entry.is_file(follow_symlinks=False):
            try:
                meta = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the folder was read
            micros = meta.st_mtime_ns // 1000
            files.append(
                (
                    prefix + entry.name,
                    meta.st_size,
                    "%x-%x-%x" % (meta.st_ino, micros, meta.st_size),  # noqa: UP031 (faster)
                    micros,
                    max(meta.st_ctime_ns, meta.st_mtime_ns) // 1000,
                )
            )
    return files, folders, links


try:  # the same in C (setup.py builds it where a compiler is at hand): a scan's walk
    # by name: the import graph of the layer contracts (grimp) sees only Python files and
    # would take this import for one of the package ``shelflife`` itself
    _read_folder = importlib.import_module("shelflife.stores._folder").read_folder
except ImportError:  # pragma: no cover - a build without the compiled module
    _read_folder = _read_folder_py


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A file opened for reading: never through a link in its last segment (the folders on
# the way were checked by path()).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_folder(parent: int, name: str) -> int | None:
    """A folder of ``parent`` opened for the walk; None if it is gone or is not a folder
    (a link swapped in since the parent was read: never followed)."""
    if _UNLISTED_FOLDER.search(name) is not None:
        return None  # no key can pass through it
    try:
        return os.open(name, _FOLDER_FLAGS, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _stat_info(key: str, meta: os.stat_result) -> ObjectInfo:
    micros = meta.st_mtime_ns // 1000
    return _entry_info(
        (
            key,
            meta.st_size,
            f"{meta.st_ino:x}-{micros:x}-{meta.st_size:x}",
            micros,
            max(meta.st_ctime_ns, meta.st_mtime_ns) // 1000,
        )
    )


def _entry_info(entry: Entry) -> ObjectInfo:
    key, size, etag, modified, arrived = entry
    return ObjectInfo(
        key=key,
        size=size,
        modified=_EPOCH + timedelta(microseconds=modified),
        etag=etag,
        arrived=None if arrived is None else _EPOCH + timedelta(microseconds=arrived),
    )


def _open_regular(path: Path, offset: int) -> tuple[BinaryIO, os.stat_result] | None:
    """The file at ``path`` open for reading at ``offset`` and its stat; None if it is not
    a regular file."""
    fd = os.open(path, _READ_FLAGS)
    try:
        meta = os.fstat(fd)
        if not S_ISREG(meta.st_mode):
            os.close(fd)
            return None
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), meta


def _set_mtime(path: Path, modified: datetime) -> None:
    delta = modified.astimezone(UTC) - _EPOCH
    nanos = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    os.utime(path, ns=(time.time_ns(), nanos))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@contextmanager
def _folder_collision(key: str) -> Iterator[None]:
    """A file and a folder cannot share a path: say so instead of 'Is a directory'.

    In the write block a FileExistsError can only come from creating the key's folders
    (the staging name is random, and a create-only publish reports ObjectExists itself).
    """
    try:
        yield
    except ObjectExists:
        raise
    except (FileExistsError, NotADirectoryError):
        raise InvalidKeyError(
            f"key {key[:80]!r} needs a folder where this local tier has a file",
            hint="choose another key, or store such keys on an object-store tier",
        ) from None
    except IsADirectoryError:
        raise InvalidKeyError(
            f"key {key[:80]!r} names a folder on this local tier; a file and a folder cannot "
            "share a path",
            hint="choose another key, or store such keys on an object-store tier",
        ) from None


def _copy_file(source: Path, handle: BinaryIO, digest: Any) -> int:
    size = 0
    with source.open("rb") as reader:
        while chunk := reader.read(COPY_CHUNK):
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    return size


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _discard(handle: BinaryIO, staging: Path) -> None:
    handle.close()
    staging.unlink(missing_ok=True)


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and any missing parents; return those created, outermost first."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for each in missing:
        each.mkdir(exist_ok=True)
    return missing


def _publish(staging: Path, target: Path, overwrite: bool, created: Sequence[Path] = ()) -> None:
    """Rename into place (or link, which fails if the target exists), then sync the folder,
    and the parent of each folder the write ``created`` (so that the new folders' entries
    are as durable as the file's)."""
    try:
        if overwrite:
            os.replace(staging, target)
        else:
            os.link(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    for folder in [target.parent, *(made.parent for made in reversed(created))]:
        _sync_folder(folder)


def _sync_folder(path: Path) -> None:
    folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
