"""A Django storage backend whose files live on a shelf.

``ShelflifeStorage`` stores what a ``FileField`` saves through :meth:`Shelf.put` (on the
tier it is told, ``local`` by default) and answers ``url``, ``open``, ``exists``, ``size``,
``delete``, ``listdir`` and the file times wherever the object sits today: the name a row
holds may be the key it was saved under, or the value a shelflife migration rewrote it to
(``s3://bucket/prefix/uploads/report.pdf``), or a key whose row nobody rewrote. A name is
the key itself first, on whichever tier holds it; only a name no tier holds as a key is
read as a reference value (by the one resolver, :meth:`Shelf.resolve`). With
``allow_overwrite``, a save over an existing name replaces the object where it lives now.

Configured through Django's ``STORAGES`` setting::

    STORAGES = {
        "default": {
            "BACKEND": "shelflife.contrib.django.ShelflifeStorage",
            "OPTIONS": {"config": BASE_DIR / "shelflife.toml", "tier": "local"},
        },
        "staticfiles": {...},
    }

Options: ``config`` (a ``shelflife.toml``; by default the usual search: ``$SHELFLIFE_CONFIG``,
then ``./shelflife.toml``), ``tier`` (where new files go; the configuration's default tier
unless told), ``allow_overwrite`` (``False``: a name in use gets Django's random suffix, as
``FileSystemStorage`` does), ``tags`` (given to every object saved, for rule filters).

The shelf is opened on first use, once per process and configuration, and shared by
every storage and thread of the process (a forked child opens its own).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

try:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
    from django.core.files.base import File
    from django.core.files.storage import Storage
    from django.utils import timezone
    from django.utils.deconstruct import deconstructible
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without Django
    raise ImportError(
        "shelflife.contrib.django needs Django, which is not installed: "
        "pip install 'shelflife[django]'"
    ) from exc

from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key, validate_prefix
from shelflife.catalog.catalog import CatalogObject
from shelflife.config import load_config
from shelflife.errors import (
    ConfigError,
    InvalidKeyError,
    ObjectExists,
    ObjectNotFound,
    ShelflifeError,
)
from shelflife.model.locations import Location
from shelflife.service.objects import find_key, resolve_name
from shelflife.service.shelf import Shelf
from shelflife.stores import ObstoreStore
from shelflife.stores.local import LocalStore

__all__ = ["InvalidFileName", "ShelflifeStorage", "close_shelves", "shelf_for"]

T = TypeVar("T")

# A create-only write that loses a race to another writer of the same name picks another
# name and tries again, at most this many times.
_SAVE_ATTEMPTS = 5
_READ_CHUNK = 1024 * 1024
_SPOOL_LIMIT = 8 * 1024 * 1024  # a file read from an object store spills to disk past this

_shelves: dict[tuple[int, str | None], Shelf] = {}
_shelves_lock = threading.Lock()


class InvalidFileName(SuspiciousFileOperation):
    """A file name shelflife may not store: Django answers a request raising it with 400."""

    def __init__(self, name: str, error: InvalidKeyError) -> None:
        hint = f" ({error.hint})" if error.hint else ""
        super().__init__(f"shelflife cannot store the file name {name!r}: {error.message}{hint}")


def shelf_for(config: str | Path | None = None) -> Shelf:
    """The shelf of ``config`` (the usual search when None), opened once per process.

    Every storage and thread of a process naming the same file shares one shelf; a
    process forked after it was opened opens its own (connections are not shared)."""
    path = None if config is None else str(Path(config).expanduser().resolve())
    slot = (os.getpid(), path)
    shelf = _shelves.get(slot)
    if shelf is not None:
        return shelf
    with _shelves_lock:
        shelf = _shelves.get(slot)
        if shelf is None:
            try:
                shelf = Shelf.open(load_config(path))
            except ConfigError as exc:
                raise ImproperlyConfigured(_explained(exc, "ShelflifeStorage's config")) from exc
            _shelves[slot] = shelf
        return shelf


def close_shelves() -> None:
    """Close every shelf this process opened (tests, and code that tears Django down)."""
    with _shelves_lock:
        mine = [slot for slot in _shelves if slot[0] == os.getpid()]
        for slot in mine:
            _shelves.pop(slot).close()


@deconstructible(path="shelflife.contrib.django.ShelflifeStorage")
class ShelflifeStorage(Storage):
    """Django's ``Storage`` over a shelf: saves on one tier, reads from wherever the object
    is now. Names are shelflife keys (``uploads/2026/report.pdf``); a name a migration
    rewrote (any value a reference column holds) is read the same way."""

    def __init__(
        self,
        config: str | Path | None = None,
        tier: str | None = None,
        *,
        allow_overwrite: bool = False,
        tags: dict[str, str] | None = None,
    ) -> None:
        self._config = None if config is None else str(config)
        self._tier = tier
        self.allow_overwrite = allow_overwrite
        self.tags = dict(tags) if tags else None

    # -- the shelf -------------------------------------------------------------------------

    @property
    def shelf(self) -> Shelf:
        """The process's shared shelf for this storage's configuration."""
        shelf = shelf_for(self._config)
        if self._tier is not None and self._tier not in shelf.config.tiers:
            raise ImproperlyConfigured(
                f"ShelflifeStorage's tier {self._tier!r} is not a tier of "
                f"{shelf.config.source}; its tiers are {', '.join(shelf.config.tiers)}. "
                "Name one of them in the STORAGES OPTIONS 'tier'."
            )
        return shelf

    @property
    def tier(self) -> str:
        """The tier new files are written to."""
        return self._tier or self.shelf.config.default_tier

    # -- names -----------------------------------------------------------------------------

    def generate_filename(self, filename: Any) -> str:
        name = super().generate_filename(filename)
        return _checked(name)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        _checked(str(name).replace("\\", "/"))
        return _checked(super().get_available_name(name, max_length=max_length))

    def is_name_available(self, name: str, max_length: int | None = None) -> bool:
        if self.allow_overwrite:
            return not (max_length and len(name) > max_length)
        return super().is_name_available(name, max_length=max_length)

    def get_alternative_name(self, file_root: str, file_ext: str) -> str:
        if self.allow_overwrite:
            return f"{file_root}{file_ext}"
        return super().get_alternative_name(file_root, file_ext)

    # -- writing ---------------------------------------------------------------------------

    def save(self, name: str | None, content: IO[Any], max_length: int | None = None) -> str:
        """Django's ``save``; a name another writer took meanwhile (the create-only write
        found an object there) gets another name, as a name found in use would."""
        if name is not None:
            _checked(str(name))
        for _attempt in range(_SAVE_ATTEMPTS - 1):
            try:
                return super().save(name, content, max_length)
            except ObjectExists:
                content.seek(0)
        return super().save(name, content, max_length)

    def _save(self, name: str, content: File[Any]) -> str:
        key = _checked(name)
        source: Path | io.BufferedReader
        temporary = getattr(content, "temporary_file_path", None)
        if callable(temporary):
            source = Path(temporary())  # an upload Django spooled to disk: sent as a file
        else:
            if content.seekable():
                content.seek(0)
            source = io.BufferedReader(_ByteReader(content), _READ_CHUNK)
        tier = self.tier
        if self.allow_overwrite:
            # Over the object where it lives today (after a migration, another tier), so
            # no stale copy stays behind for a row that names that tier.
            found = find_key(self.shelf.context, key, first=tier)
            if found is not None:
                tier = found.tier
        stored = _translated(
            lambda: self.shelf.put(
                source,
                key,
                tier=tier,
                overwrite=self.allow_overwrite,
                tags=self.tags,
            ),
            name,
        )
        return stored.key

    def delete(self, name: str) -> None:
        """Delete the object wherever it is; one already gone is not an error."""
        if not name:
            raise ValueError("The name must be given to delete().")
        with contextlib.suppress(FileNotFoundError):
            location = self._locate(name)
            shelf = self.shelf
            _translated(lambda: run_sync(shelf.store(location.tier).delete(location.key)), name)
            shelf.catalog.forget(location.tier, [location.key])

    # -- reading ---------------------------------------------------------------------------

    def _open(self, name: str, mode: str = "rb") -> File[Any]:
        if any(flag in mode for flag in "wax+"):
            raise ValueError(
                f"ShelflifeStorage opens files for reading only (mode {mode!r} asked for "
                f"{name!r}); write new content with storage.save(name, content)"
            )
        location = self._locate(name)
        handle: IO[Any] = _translated(lambda: _open_at(self.shelf, location), name)
        if "b" not in mode:
            handle = io.TextIOWrapper(handle, encoding="utf-8")
        return File(handle, name=name)

    def exists(self, name: str) -> bool:
        try:
            self._locate(name)
        except FileNotFoundError:
            return False
        return True

    def url(self, name: str | None) -> str:
        """A URL for the object: its tier's ``public_url`` on a local tier, a fresh
        presigned URL on an object store, wherever the object sits now."""
        if not name:
            raise ValueError("This file has no name, so it has no URL.")
        location = self._locate(name)
        shelf = self.shelf
        url = _translated(lambda: run_sync(shelf.store(location.tier).url(location.key)), name)
        shelf.record_access(location)
        return url

    def size(self, name: str) -> int:
        location = self._locate(name)
        store = self.shelf.store(location.tier)
        return _translated(lambda: run_sync(store.head(location.key)).size, name)

    def get_modified_time(self, name: str) -> datetime:
        location = self._locate(name)
        store = self.shelf.store(location.tier)
        return _django_time(_translated(lambda: run_sync(store.head(location.key)).modified, name))

    def get_created_time(self, name: str) -> datetime:
        """When the object was first written anywhere (kept across migrations)."""
        entry = self._catalog_entry(name)
        return _django_time(entry.created_at or entry.first_seen_at)

    def get_accessed_time(self, name: str) -> datetime:
        """The last read through shelflife, else the modification time."""
        entry = self._catalog_entry(name)
        return _django_time(entry.last_accessed_at or entry.modified_at)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """Folders and files directly under ``path``, over every tier."""
        prefix = str(path or "").replace("\\", "/").strip("/")
        if prefix:
            try:
                validate_prefix(prefix + "/")
            except InvalidKeyError as exc:
                raise InvalidFileName(path, exc) from None
            prefix += "/"
        directories: set[str] = set()
        files: set[str] = set()
        for _tier, info in _translated(lambda: list(self.shelf.ls(prefix)), path):
            head, slash, _rest = info.key[len(prefix) :].partition("/")
            (directories if slash else files).add(head)
        return sorted(directories), sorted(files)

    # -- helpers ---------------------------------------------------------------------------

    def _locate(self, name: str) -> Location:
        """Where the file ``name`` is: the key ``name`` on any tier holding it (this
        storage's tier first), else the object ``name`` names as a reference value."""
        return _translated(lambda: resolve_name(self.shelf.context, name, first=self.tier), name)

    def _catalog_entry(self, name: str) -> CatalogObject:
        location = self._locate(name)
        entry = self.shelf.catalog.get(location.tier, location.key)
        if entry is None:
            raise FileNotFoundError(
                f"{name!r} is on tier {location.tier} but not in shelflife's inventory yet; "
                "run 'shelflife scan'"
            )
        return entry


class _ByteReader(io.RawIOBase):
    """A Django ``File`` read as bytes (a ``ContentFile`` of text is encoded as UTF-8)."""

    def __init__(self, content: File[Any]) -> None:
        self._content = content
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending:
            chunk = self._content.read(len(view))
            self._pending = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        data, self._pending = self._pending[: len(view)], self._pending[len(view) :]
        view[: len(data)] = data
        return len(data)


def _open_at(shelf: Shelf, location: Location) -> IO[bytes]:
    """A readable binary file of the object at ``location`` (a local tier: the file)."""
    store = shelf.store(location.tier)
    if isinstance(store, LocalStore):
        try:
            handle: IO[bytes] = store.path(location.key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at {store.location}/{location.key}") from None
    else:
        handle = tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT)  # noqa: SIM115
        run_sync(_spool(store, location.key, handle))
        handle.seek(0)
    shelf.record_access(location)
    return handle


async def _spool(store: ObstoreStore, key: str, spool: IO[bytes]) -> None:
    async for chunk in store.get(key):
        spool.write(chunk)


def _checked(name: str) -> str:
    """``name`` if shelflife may store it as a key, else a clear Django error."""
    try:
        return validate_key(posixpath.normpath(name) if name else name)
    except InvalidKeyError as exc:
        raise InvalidFileName(name, exc) from None


def _translated(call: Callable[[], T], name: str) -> T:
    """Run a shelf call, turning shelflife's errors into what Django code expects:
    a missing object is ``FileNotFoundError``, a bad name ``SuspiciousFileOperation``;
    the rest keep shelflife's message and hint."""
    try:
        return call()
    except InvalidKeyError as exc:
        raise InvalidFileName(name, exc) from None
    except ObjectNotFound as exc:
        raise FileNotFoundError(_explained(exc, f"no file {name!r}")) from exc


def _explained(exc: ShelflifeError, what: str) -> str:
    return f"{what}: {exc.message}" + (f"; {exc.hint}" if exc.hint else "")


def _django_time(instant: datetime) -> datetime:
    """Aware UTC when ``USE_TZ``, naive local time otherwise (Django's convention)."""
    if settings.USE_TZ:
        return instant.astimezone(UTC)
    return timezone.make_naive(instant) if timezone.is_aware(instant) else instant
