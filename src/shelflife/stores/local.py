"""``file://`` tiers: a folder on a local or mounted filesystem."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from obstore.store import LocalStore as _ObLocalStore

from shelflife.config.model import TierConfig
from shelflife.errors import InvalidKeyError, ObjectExists, StoreConfigError
from shelflife.keys import validate_key
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import PutResult, PutSource

COPY_CHUNK = 4 * 1024 * 1024
NAME_MAX = 255  # bytes in one file name on Linux filesystems
# obstore writes a local object to "<path>#<n>" and renames it; such names are not listed.
_STAGING_SUFFIX = re.compile(r"#\d+$")


class LocalStore(ObstoreStore):
    """Objects as files under ``root``; writes go to a temporary file, then rename."""

    sorted_listing = False  # a directory walk is in no particular order

    def __init__(self, root: Path, *, public_url: str | None = None) -> None:
        if not root.is_absolute():
            raise StoreConfigError(f"local store root {root} must be an absolute path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(
                f"cannot create the folder {root}: {exc.strerror}",
                hint="create it yourself, or give the user running shelflife write access",
            ) from None
        self.root = root
        self.public_url = public_url
        super().__init__(_ObLocalStore(prefix=root, automatic_cleanup=True), "file://" + str(root))

    @classmethod
    def from_tier(cls, tier: TierConfig) -> LocalStore:
        return cls(Path(tier.url.removeprefix("file://")), public_url=tier.public_url)

    async def put(self, key: str, source: PutSource, *, overwrite: bool = True) -> PutResult:
        """Stream into a staging file beside the target, fsync, then rename into place.

        Memory stays at one chunk whatever the size. The staging name ends in ``#<digits>``,
        which listings skip, so a half-written file is never taken for an object: a crash
        leaves at most such a staging file, never a partial object under the key.
        """
        self._check_local_key(key)
        target = self.root / key
        staging = target.with_name(f"{target.name}#{secrets.randbelow(10**12)}")
        digest = hashlib.sha256()
        with self._writing(key), _folder_collision(key):
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            handle = await asyncio.to_thread(open, staging, "xb")
            try:
                size = await self._write_all(handle, source, digest)
                await asyncio.to_thread(_flush_and_sync, handle)
            except BaseException:
                await asyncio.to_thread(_discard, handle, staging)
                raise
            handle.close()
            try:
                await asyncio.to_thread(_publish, staging, target, overwrite)
            except FileExistsError:
                raise ObjectExists(f"an object already exists at {self.location}/{key}") from None
        info = await self.head(key)
        return PutResult(key, size, "sha256:" + digest.hexdigest(), info.etag)

    async def get(self, key: str, *, chunk_size: int = COPY_CHUNK) -> AsyncIterator[bytes]:
        """Read the file in chunks (obstore's local stream buffers far more than one chunk)."""
        validate_key(key)
        with self._translated(key):
            handle = await asyncio.to_thread(open, self.root / key, "rb")
            try:
                while chunk := await asyncio.to_thread(handle.read, chunk_size):
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
        """The file that holds ``key`` (it may not exist)."""
        return self.root / validate_key(key)

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


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename into place (or link, which fails if the target exists), then sync the folder."""
    try:
        if overwrite:
            os.replace(staging, target)
        else:
            os.link(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
