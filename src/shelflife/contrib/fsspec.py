"""``shelflife://`` for fsspec: pandas, dask and pyarrow reach objects by key, wherever
shelflife has put them.

``shelflife://reports/q1.csv`` names the key ``reports/q1.csv``; a read finds it on the
tier it sits on today (the local tier, or an object store after a migration). A path no
tier holds as a key is read as a reference column's value, as
:meth:`Shelf.resolve <shelflife.service.shelf.Shelf.resolve>` reads one, so any value a
row holds may stand for the key too. Folders are derived from ``/`` in the
keys, as on an object store: a folder exists while an object is under it, ``mkdir`` does
nothing, and an empty folder cannot exist.

Options (``storage_options``): ``config`` (the config file; else ``$SHELFLIFE_CONFIG``,
else ``./shelflife.toml``, else the embedded default, as every shelflife command finds it),
``tier`` (where new objects are written; the config's default tier, ``local``, unless
told), or ``shelf`` (an open :class:`~shelflife.service.shelf.Shelf`, for applications
that have one), ``force_delete`` (``True`` lets ``rm`` delete objects rows still name;
by default such a delete is refused with ``PermissionError``, as the HTTP API answers 409).

Reads are seekable and fetch byte ranges (a local tier reads its file, object stores
ranged GETs). Writes are spooled (to disk past 8 MiB) and stored on close through
:meth:`Shelf.put <shelflife.service.shelf.Shelf.put>`, with its upload lease and
inventory row; an existing object is replaced where it lives, so the rows that name it
keep naming it. Deletes never touch shelflife's own keys (``.shelflife-trash/`` …), which
listings leave out. Errors are the built-ins fsspec users catch: ``FileNotFoundError``,
``FileExistsError``, ``IsADirectoryError``, ``PermissionError``, ``ValueError`` for a
path that cannot be a key.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

try:
    from fsspec.spec import (  # type: ignore[import-untyped]
        AbstractBufferedFile,
        AbstractFileSystem,
    )
except ImportError as exc:  # pragma: no cover - exercised without fsspec installed
    raise ImportError(
        "shelflife's fsspec filesystem needs fsspec: pip install 'shelflife[fsspec]'"
    ) from exc


from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key, validate_prefix
from shelflife.engine import trust
from shelflife.errors import ObjectArchived, ObjectNotFound, StoreAuthError, StoreError
from shelflife.model.locations import Location
from shelflife.service.objects import resolve_name
from shelflife.service.shelf import INTERNAL_PREFIX, Shelf
from shelflife.service.uploads import DirectRecorder, put_object
from shelflife.stores import ObjectInfo, ObstoreStore

_SPOOL_LIMIT = 8 * 1024 * 1024

Details = dict[str, Any]


class ShelflifeFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Objects of every tier of one shelflife configuration, addressed by key."""

    protocol = "shelflife"
    root_marker = ""

    def __init__(
        self,
        config: str | Path | None = None,
        *,
        tier: str | None = None,
        shelf: Shelf | None = None,
        force_delete: bool = False,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        self.shelf = shelf if shelf is not None else Shelf.open(config)
        self.tier = tier or self.shelf.config.default_tier
        self.force_delete = force_delete
        self.shelf.store(self.tier)  # an unknown tier is refused now, not at the first write

    # -- paths --------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``shelflife://a/b`` and ``a/b/`` → ``a/b``. A path without the protocol keeps
        its leading ``/``: it may be a reference value (``/workspace/out/x.mp4``)."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith("shelflife://"):
            text = text[len("shelflife://") :].lstrip("/")
        elif text.startswith("shelflife::"):
            text = text[len("shelflife::") :].lstrip("/")
        return text.rstrip("/")

    @classmethod
    def _parent(cls, path: str) -> str:
        key = cls._strip_protocol(path)
        return str(key.rsplit("/", 1)[0]) if "/" in key else ""

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith("shelflife://") else f"shelflife://{name}"

    # -- reading the shelf ------------------------------------------------------------

    def _locate(self, path: str) -> Location:
        """Where the object a path names lives today: the key itself on any tier holding
        it, else the object a reference value spelling it names."""
        return resolve_name(self.shelf.context, self._strip_protocol(path))

    def _object(self, path: str) -> tuple[Location, ObjectInfo]:
        location = self._locate(path)
        head = run_sync(self.shelf.store(location.tier).head(location.key))
        return location, head

    def _file_details(self, tier: str, info: ObjectInfo) -> Details:
        return {
            "name": info.key,
            "size": info.size,
            "type": "file",
            "tier": tier,
            "etag": info.etag,
            "mtime": info.modified.timestamp(),
            "ref": self.shelf.locator.render(Location(tier, info.key)),
        }

    def _objects(self, prefix: str) -> Iterator[Details]:
        """Every object under the folder ``prefix`` ("" for all), each key once (from the
        first tier in the config's order that lists it)."""
        validate_prefix(prefix)
        base = prefix + "/" if prefix else ""
        seen: set[str] = set()
        # The folder itself is listed (``r/sub/``), not its parent filtered by name.
        for tier, info in self.shelf.ls(base, internal=False):
            if info.key.startswith(base) and info.key not in seen:
                seen.add(info.key)
                yield self._file_details(tier, info)

    def _has_objects_under(self, prefix: str) -> bool:
        if not prefix:
            return True
        try:
            return next(self._objects(prefix), None) is not None
        except ValueError:  # not a folder any key could be under
            return False

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Details] | list[str]:
        """The objects and folders directly in a folder; ``[file]`` for a file's path."""
        prefix = self._strip_protocol(path)
        base = prefix + "/" if prefix else ""
        files: dict[str, Details] = {}
        folders: dict[str, Details] = {}
        for details in self._objects(prefix):
            head, slash, _ = details["name"][len(base) :].partition("/")
            if slash:
                name = base + head
                folders.setdefault(name, _folder(name))
            else:
                files[details["name"]] = details
        entries = sorted([*files.values(), *folders.values()], key=lambda d: d["name"])
        if not entries and prefix:
            entries = [self.info(path)]
            if entries[0]["type"] == "directory":  # pragma: no cover - listed above
                entries = []
        return entries if detail else [entry["name"] for entry in entries]

    def info(self, path: str, **kwargs: Any) -> Details:
        key = self._strip_protocol(path)
        if not key:
            return _folder("")
        try:
            location, head = self._object(key)
        except ObjectNotFound as exc:
            if self._has_objects_under(key):
                return _folder(key)
            raise FileNotFoundError(str(exc)) from exc
        return self._file_details(location.tier, head)

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a folder, as :meth:`info` would say, in fewer requests: an
        inventoried key is a file's (one ``head`` confirms it), and a path no object is
        under is no folder (one listing per tier, no lookup of an object there: the
        common case of a copy's or a write's new target). A path that cannot be a key
        is no folder, as it does not exist."""
        key = self._strip_protocol(path)
        if not key:
            return True
        if self._inventoried(key):
            try:
                return bool(self.info(key)["type"] == "directory")
            except FileNotFoundError:
                return False
        if not self._has_objects_under(key):
            return False
        try:
            self._object(key)
        except ObjectNotFound:
            return True
        return False

    def _inventoried(self, key: str) -> bool:
        """Whether the inventory has the literal key ``key`` on some tier."""
        try:
            key = validate_key(key)
        except ValueError:
            return False
        catalog = self.shelf.catalog
        return any(catalog.get(tier, key) is not None for tier in self.shelf.config.tiers)

    def modified(self, path: str) -> datetime:
        return self._object(path)[1].modified

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> list[str] | dict[str, Details]:
        """Every object under ``path`` from one listing (and the folders between, with
        ``withdirs``), not one listing per folder."""
        prefix = self._strip_protocol(path)
        base = prefix + "/" if prefix else ""
        found: dict[str, Details] = {}
        for details in self._objects(prefix):
            parts = details["name"][len(base) :].split("/")
            if maxdepth is None or len(parts) <= maxdepth:
                found[details["name"]] = details
            if withdirs:
                for depth in range(1, len(parts)):
                    if maxdepth is not None and depth > maxdepth:
                        break
                    name = base + "/".join(parts[:depth])
                    found.setdefault(name, _folder(name))
        if found and withdirs and prefix:
            found[prefix] = _folder(prefix)
        if not found and prefix:
            try:
                location, head = self._object(prefix)
            except (ObjectNotFound, ValueError):
                pass
            else:
                found[head.key] = self._file_details(location.tier, head)
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    # -- bytes --------------------------------------------------------------------------

    def _read_range(self, location: Location, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object, in one ranged read through its store (a
        ``file://`` tier opens the file without following links, as every read of one does)."""
        if end <= start:
            return b""
        store = self.shelf.store(location.tier)
        try:
            return run_sync(_ranged_get(store, location.key, start, end))
        except ObjectArchived as exc:
            raise PermissionError(
                f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            ) from exc
        except StoreAuthError as exc:
            raise _archived_or(exc, store, location.key) from exc

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """An object's bytes, or the slice ``[start:end]`` (negative: from the end)."""
        location, head = self._openable(path)
        self.shelf.record_access(location)
        first, last = _slice(head.size, start, end)
        return self._read_range(location, first, last)

    def _openable(self, path: str) -> tuple[Location, ObjectInfo]:
        """The object at ``path``, or the error for a folder or nothing there."""
        try:
            return self._object(path)
        except ObjectNotFound as exc:
            key = self._strip_protocol(path)
            if self._has_objects_under(key):
                raise IsADirectoryError(
                    f"{key or '/'} is a folder of objects, not an object: list it with ls()"
                ) from exc
            raise FileNotFoundError(str(exc)) from exc

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ShelflifeFile:
        if mode == "rb":
            location, head = self._openable(path)
            self.shelf.record_access(location)
            return ShelflifeFile(
                self,
                head.key,
                mode,
                block_size=block_size or "default",
                autocommit=autocommit,
                cache_options=cache_options,
                location=location,
                details=self._file_details(location.tier, head),
                **kwargs,
            )
        if mode not in ("wb", "xb"):
            raise ValueError(
                f"mode {mode!r} is not supported: objects are read ('rb') or written whole "
                "('wb', 'xb'); appending would rewrite the object"
            )
        destination = self._destination(path)
        if mode == "xb" and self.exists(path):
            raise FileExistsError(f"an object already exists at {destination.key}")
        return ShelflifeFile(
            self,
            destination.key,
            mode,
            block_size=block_size or "default",
            autocommit=autocommit,
            cache_options=cache_options,
            location=destination,
            **kwargs,
        )

    def _destination(self, path: str) -> Location:
        """Where a write of ``path`` goes: over the object where it lives today, else to
        the tier a reference value spells, else to :attr:`tier`."""
        value = self._strip_protocol(path)
        try:
            return resolve_name(self.shelf.context, value)
        except ObjectNotFound:
            pass
        spelled = self.shelf.locator.resolve(value)
        if spelled and not self.shelf.locator.only_bare(spelled):
            return spelled[0]
        return Location(self.tier, validate_key(value))

    def _store_file(self, location: Location, source: IO[bytes], *, overwrite: bool) -> None:
        self.shelf.put(cast("Any", source), location.key, tier=location.tier, overwrite=overwrite)

    def _store_bytes(self, location: Location, data: bytes, *, overwrite: bool) -> None:
        self.shelf.put(data, location.key, tier=location.tier, overwrite=overwrite)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        destination = self._destination(path)
        self.shelf.put(value, destination.key, tier=destination.tier, overwrite=mode != "create")

    def put_file(
        self,
        lpath: str,
        rpath: str,
        callback: Any = None,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        """Store a local file, streamed by the tier's own upload (one request, or parts)."""
        source = Path(lpath)
        if source.is_dir():
            return  # a folder exists by the objects in it
        destination = self._destination(rpath)
        stored = self.shelf.put(
            source, destination.key, tier=destination.tier, overwrite=mode != "create"
        )
        if callback is not None:
            callback.set_size(stored.size)
            callback.relative_update(stored.size)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy an object to a key, streamed, recorded like any write. A folder is copied
        by its objects (``copy(..., recursive=True)`` lists them): nothing to do here."""
        try:
            source, _ = self._openable(path1)
        except IsADirectoryError:
            return
        destination = self._destination(path2)
        shelf = self.shelf
        stream = shelf.store(source.tier).get(source.key)
        run_sync(
            put_object(
                shelf.context,
                stream,
                destination.key,
                tier=destination.tier,
                overwrite=True,
                recorder=DirectRecorder(shelf.catalog, shelf.ledger),
            )
        )

    # -- deleting and folders ---------------------------------------------------------------

    def _copies(self, path: str) -> list[Location]:
        """Every copy of the object at ``path``: its key on each tier holding it (the key
        itself, else the key a reference value names); [] when there is none."""
        value = self._strip_protocol(path)
        if not value:
            raise ValueError(
                "refusing to delete the root of shelflife://, which would delete every "
                "object on every tier: name a folder (rm('reports', recursive=True))"
            )
        try:
            found = self._locate(value)
        except ObjectNotFound:
            return []
        if found.key.startswith(INTERNAL_PREFIX):
            raise PermissionError(
                f"{found.key} is shelflife's own (quarantine, probes); not deleting it: "
                "'shelflife restore' brings a quarantined object back, and gc purges it "
                "when its time comes"
            )
        store_of = self.shelf.store
        return [
            Location(tier, found.key)
            for tier in self.shelf.config.tiers
            if tier == found.tier
            or self.shelf.catalog.get(tier, found.key) is not None
            or run_sync(store_of(tier).exists(found.key))
        ]

    def _refuse_referenced(self, copies: list[Location]) -> None:
        """PermissionError naming the rows that point at any of ``copies`` (unless the
        filesystem was opened with ``force_delete=True``); nothing has been deleted."""
        if self.force_delete or not copies:
            return
        sources = self.shelf.sources()
        if not sources:
            return
        held: dict[str, list[str]] = {}
        for copy in copies:
            for source in sources:
                if trust.still_referenced(
                    [source], self.shelf.locator, self.shelf.catalog, copy.tier, [copy.key]
                ):
                    labels = held.setdefault(copy.key, [])
                    if source.label not in labels:
                        labels.append(source.label)
        if held:
            named = "; ".join(
                f"{key} (rows in {', '.join(labels)})" for key, labels in sorted(held.items())
            )
            raise PermissionError(
                f"rows still point at {named}; nothing was deleted. Delete or change those "
                "rows first, or open the filesystem with force_delete=True to delete anyway"
            )

    def _delete(self, copies: list[Location]) -> None:
        for copy in copies:
            run_sync(self.shelf.store(copy.tier).delete(copy.key))
            self.shelf.catalog.forget(copy.tier, [copy.key])

    def rm_file(self, path: str) -> None:
        """Delete the object at ``path`` from every tier holding it and from the
        inventory; nothing there is not an error. An object rows still name is refused
        (PermissionError) unless the filesystem has ``force_delete=True``."""
        copies = self._copies(path)
        self._refuse_referenced(copies)
        self._delete(copies)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete objects; with ``recursive``, every object under a folder. A path named
        without ``recursive`` that holds no object is FileNotFoundError, as ``os.remove``.
        Every object is checked before any is deleted: if rows name one, nothing goes."""
        for given in path if isinstance(path, list) else [path]:
            if not self._strip_protocol(given):
                self._copies(given)  # the root: refused
        names = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        if not recursive:
            for name in names:
                if not self.exists(name):
                    raise FileNotFoundError(f"no object {name!r} on any tier")
        targets = [self._copies(name) for name in reversed(names)]
        self._refuse_referenced([copy for copies in targets for copy in copies])
        for copies in targets:
            self._delete(copies)

    def mv(
        self,
        path1: Any,
        path2: Any,
        recursive: bool = False,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Copy, then delete the source: refused before anything is copied when rows name
        a source object (their rows would point at nothing), unless ``force_delete``."""
        if path1 == path2:
            return
        names = self.expand_path(path1, recursive=recursive, maxdepth=maxdepth)
        self._refuse_referenced([copy for name in names for copy in self._copies(name)])
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: a folder exists while an object is under it."""
        validate_prefix(self._strip_protocol(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Nothing to do: a folder exists while an object is under it."""
        validate_prefix(self._strip_protocol(path))

    def rmdir(self, path: str) -> None:
        """Nothing to remove from an empty folder; a folder with objects is refused."""
        key = self._strip_protocol(path)
        if key and self._has_objects_under(key):
            raise OSError(39, f"{key} holds objects: remove them (rm(path, recursive=True))")


class ShelflifeFile(AbstractBufferedFile):  # type: ignore[misc]
    """An object opened: ranged reads, or a write spooled and stored on close."""

    def __init__(
        self,
        fs: ShelflifeFileSystem,
        path: str,
        mode: str,
        *,
        location: Location,
        details: Details | None = None,
        **kwargs: Any,
    ) -> None:
        self.location = location
        if details is not None:
            self._details = details
            kwargs["size"] = details["size"]
        self._spool: IO[bytes] | None = None
        self._shelf_fs = fs
        super().__init__(fs, path, mode, **kwargs)
        self.location = location  # the base class resets it for writes

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        try:
            return self._shelf_fs._read_range(self.location, start, end)
        except ObjectNotFound:
            # Moved to another tier since it was opened (a migration): same key, same
            # bytes, checked by size before reading on.
            moved, head = self._shelf_fs._object(self.location.key)
            if moved == self.location or head.size != self.size:
                raise
            self.location = moved
            return self._shelf_fs._read_range(moved, start, end)

    def _initiate_upload(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT)  # noqa: SIM115

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._spool is not None
        self._spool.write(self.buffer.getbuffer())
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Store what was written (on close, or when a transaction ends)."""
        if self._spool is None:
            return
        spool, self._spool = self._spool, None
        overwrite = self.mode != "xb"
        try:
            if spool.tell() <= _SPOOL_LIMIT:  # still in memory: one request, no parts
                spool.seek(0)
                self._shelf_fs._store_bytes(self.location, spool.read(), overwrite=overwrite)
            else:
                spool.seek(0)
                self._shelf_fs._store_file(self.location, spool, overwrite=overwrite)
        finally:
            spool.close()

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _folder(name: str) -> Details:
    return {"name": name, "size": 0, "type": "directory"}


def _slice(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """``[start:end]`` of ``size`` bytes as absolute offsets, clamped like a slice."""
    first, last, _ = slice(start, end).indices(size)
    return first, max(first, last)


async def _ranged_get(store: ObstoreStore, key: str, start: int, end: int) -> bytes:
    async with await store.open(key, offset=start, length=end - start) as stream:
        return b"".join([chunk async for chunk in stream])


def _archived_or(exc: StoreAuthError, store: ObstoreStore, key: str) -> OSError:
    """A refused read of an archived object says so (and how to restore it)."""
    try:
        archived = run_sync(store.archived(key))
    except StoreError:
        archived = False  # the refusal as it was is the better message
    if archived:
        return PermissionError(
            f"{store.location}/{key} is archived and cannot be read until it is restored "
            f"({store.restore_hint(key)})"
        )
    return exc
