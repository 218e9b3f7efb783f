"""The service layer: one object that opens a configuration and does what the CLI,
the HTTP API and the scheduler ask, through the same functions.

``url``, ``get``, ``open`` and ``delete`` accept a key or any value a reference column
holds (``s3://bucket/outputs/x.mp4``, ``data/storage/outputs/x.mp4``); the object is
looked for on the tier the value names first, then on the others, so a row's value
keeps working whichever tier the object sits on today.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import secrets
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, Protocol, overload

from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key, validate_prefix
from shelflife.base.progress import Progress
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.actionlog import LogEntry, LogFilter
from shelflife.catalog.history import History, RunRecord
from shelflife.catalog.ledger import Ledger
from shelflife.config import Config, load_config
from shelflife.config.model import RuleConfig
from shelflife.engine import trust
from shelflife.engine.context import Context
from shelflife.engine.executor import Dispatcher
from shelflife.engine.fanout import execute_batch
from shelflife.engine.scan import ScanResult
from shelflife.engine.stats import Health, TierUsage, classify, usage
from shelflife.errors import (
    InvalidKeyError,
    ObjectNotFound,
    RefusedError,
    ShelflifeError,
    StoreError,
    UsageError,
)
from shelflife.model.actions import COMMAND_ACTIONS, RULE_ACTIONS, Action
from shelflife.model.locations import Location, Locator
from shelflife.model.outcome import RunOutcome
from shelflife.model.plan import Plan
from shelflife.references.sources import Databases, ParseReport, ReferenceSource
from shelflife.service import actionlog, recovery, runs
from shelflife.service.audit import AuditReport, audit_references
from shelflife.service.dispatch import dispatcher_for
from shelflife.service.environment import declare_found_references
from shelflife.service.objects import release_object, resolve, restore_from_quarantine
from shelflife.service.policy import bucket_versioned
from shelflife.service.records import stats_body
from shelflife.service.schedule import schedule_status
from shelflife.service.uploads import DirectRecorder, StoredObject, UploadRecorder, put_object
from shelflife.stores import ObjectInfo, ObstoreStore
from shelflife.stores.base import PutSource
from shelflife.stores.local import LinkedPath, LocalStore

_SPOOL_LIMIT = 8 * 1024 * 1024


class _Opener(Protocol):
    def __call__(self, config: Config | str | Path | None = None) -> Shelf: ...


class _ObjectOpener(Protocol):
    def __call__(self, ref: str) -> IO[bytes]: ...


class _OpenShelfOrObject:
    """``Shelf.open(config)`` opens a shelf; ``shelf.open(ref)`` opens an object.

    Both spellings are part of the public API, so one name dispatches on whether it is
    reached through the class or through an instance (typed both ways)."""

    @overload
    def __get__(self, instance: None, owner: type[Shelf]) -> _Opener: ...

    @overload
    def __get__(self, instance: Shelf, owner: type[Shelf]) -> _ObjectOpener: ...

    def __get__(self, instance: Shelf | None, owner: type[Shelf]) -> _Opener | _ObjectOpener:
        if instance is None:
            return owner.from_config
        return instance.open_object


class Shelf:
    """A configuration opened: the facade applications and the interfaces use.

    It composes the :class:`~shelflife.engine.context.Context` (config, catalog, stores,
    reference sources, clock) the services and the engine work with, and the dispatcher
    runs hand their batches to (``[executor] backend``, or one given)."""

    open = _OpenShelfOrObject()

    def __init__(
        self,
        config: Config,
        catalog: Catalog | None = None,
        *,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        # the STORAGE_* environment's original columns: declared if they exist
        config, self.environment_references = declare_found_references(config)
        self.context = Context.open(config, catalog)
        self.context.versioned = self.versioned
        self.dispatcher = dispatcher or dispatcher_for(config)
        self._versioned: dict[str, bool] = {}
        # set by a server to batch access-time writes (see shelflife.api.access)
        self.access: Callable[[str, str], None] | None = None
        # set by a server to commit uploads' catalog writes in groups (put_async)
        self.uploads: UploadRecorder | None = None

    @classmethod
    def from_config(cls, config: Config | str | Path | None = None) -> Shelf:
        """Open a config file (or the one found by the usual search) or a Config."""
        if not isinstance(config, Config):
            config = load_config(config)
        return cls(config)

    @property
    def config(self) -> Config:
        return self.context.config

    @property
    def catalog(self) -> Catalog:
        return self.context.catalog

    @property
    def ledger(self) -> Ledger:
        return self.context.ledger

    @property
    def locator(self) -> Locator:
        return self.context.locator

    @property
    def databases(self) -> Databases:
        return self.context.databases

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> Shelf:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- stores ---------------------------------------------------------------------------

    def store(self, tier: str) -> ObstoreStore:
        """The store of a tier, opened on first use."""
        return self.context.store(tier)

    def resolve(self, ref: str) -> Location:
        """Find where the object a key or reference value names lives today (see
        :func:`shelflife.service.objects.resolve`)."""
        return resolve(self.context, ref)

    # -- objects --------------------------------------------------------------------------

    def put(
        self,
        source: str | Path | bytes | BinaryIO,
        key: str | None = None,
        *,
        tier: str | None = None,
        overwrite: bool = True,
        tags: dict[str, str] | None = None,
    ) -> StoredObject:
        """Store a file, bytes or a binary stream; return where it went and its row value."""
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
            if not path.is_file():
                raise UsageError(f"{path} is not a file", hint="give the path of a file to store")
            payload = path
        elif isinstance(source, bytes | bytearray | memoryview):
            payload = bytes(source)
        else:
            payload = _aiter_stream(source)
        recorder = DirectRecorder(self.catalog, self.ledger)
        stored = run_sync(
            put_object(
                self.context, payload, key, tier=tier, overwrite=overwrite, recorder=recorder
            )
        )
        if tags:
            self.catalog.set_tags(tier, key, tags)
        return stored

    async def put_async(
        self, source: PutSource, key: str, *, tier: str | None = None, overwrite: bool = True
    ) -> StoredObject:
        """Store bytes, a file or an async iterable of chunks from a running event loop
        (the HTTP API's uploads), its catalog writes through :attr:`uploads`."""
        tier = tier or self.config.default_tier
        validate_key(key)
        self.store(tier)
        recorder = self.uploads or DirectRecorder(self.catalog, self.ledger)
        return await put_object(
            self.context, source, key, tier=tier, overwrite=overwrite, recorder=recorder
        )

    def get(self, ref: str) -> bytes:
        """The object's bytes, in memory: use :meth:`download` or :meth:`open` for large ones."""
        location = self.resolve(ref)
        self.record_access(location)
        return run_sync(self.store(location.tier).get_bytes(location.key))

    @overload
    def download(self, ref: str, dest: str | Path) -> Path: ...

    @overload
    def download(self, ref: str, dest: BinaryIO) -> None: ...

    def download(self, ref: str, dest: str | Path | BinaryIO) -> Path | None:
        """Stream the object into a file and return the file, or into a binary stream
        (``sys.stdout.buffer``).

        A ``dest`` that is an existing folder, or a string ending in ``/`` (a folder
        created if missing), receives the object under its name. The file is written
        beside its target and renamed into place, so a failed download leaves nothing
        half-written; it gets the mode a new file of this process gets (0666 less the
        umask)."""
        location = self.resolve(ref)
        store = self.store(location.tier)
        self.record_access(location)
        if not isinstance(dest, str | Path):
            run_sync(_stream(store, location.key, dest))
            return None
        target = Path(dest)
        into = isinstance(dest, str) and dest.endswith(("/", os.sep))
        try:
            if into or target.is_dir():
                target = target / Path(location.key).name
            target.parent.mkdir(parents=True, exist_ok=True)
            _writable_target(target)
            run_sync(_download(store, location.key, target))
        except OSError as exc:
            if isinstance(exc, ShelflifeError):
                raise
            reason = exc.strerror or str(exc)
            where = str(exc.filename) if exc.filename is not None else ""
            if where and where != str(target) and not where.endswith(".part"):
                reason = f"{where}: {reason}"  # a folder on the way
            raise UsageError(
                f"cannot write {target}: {reason}",
                hint="give a file or folder you can write to (- for stdout)",
            ) from None
        return target

    def open_object(self, ref: str) -> IO[bytes]:
        """A readable binary file of the object (local tiers: the file itself)."""
        location = self.resolve(ref)
        store = self.store(location.tier)
        self.record_access(location)
        if isinstance(store, LocalStore):
            try:
                return store.path(location.key).open("rb")
            except FileNotFoundError:
                raise ObjectNotFound(f"no object at {store.location}/{location.key}") from None
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT)  # noqa: SIM115
        run_sync(_spool(store, location.key, spool))
        spool.seek(0)
        return spool

    def url(self, ref: str) -> str:
        """A URL for the object: public on a local tier, freshly presigned on object stores."""
        location = self.resolve(ref)
        self.record_access(location)
        return run_sync(self.store(location.tier).url(location.key))

    @overload
    def delete(
        self, ref: str, *, missing_ok: Literal[False] = False, force: bool = False
    ) -> Location: ...

    @overload
    def delete(self, ref: str, *, missing_ok: bool, force: bool = False) -> Location | None: ...

    def delete(self, ref: str, *, missing_ok: bool = False, force: bool = False) -> Location | None:
        """Delete the object from every tier holding its key, and from the inventory;
        return where :meth:`resolve` found it (see :meth:`delete_copies` for every tier).

        An object rows still point at is refused (:class:`~shelflife.errors.RefusedError`,
        nothing deleted) unless ``force``. An object that goes while it is deleted counts
        as deleted; one on no tier at all raises :class:`~shelflife.errors.ObjectNotFound`,
        or with ``missing_ok`` is already gone: ``None``."""
        copies = self.delete_copies(ref, missing_ok=missing_ok, force=force)
        return copies[0] if copies else None

    def delete_copies(
        self, ref: str, *, missing_ok: bool = False, force: bool = False
    ) -> list[Location]:
        """Delete the object ``ref`` names from every tier that holds its key (so that no
        older copy on another tier comes back); return the copies deleted, the one
        :meth:`resolve` finds first. Every copy is checked for rows pointing at it before
        any is deleted: referenced, nothing is deleted unless ``force``."""
        try:
            location = self.resolve(ref)
        except ObjectNotFound:
            if missing_ok:
                self._refuse_links(ref)  # not gone: a link shelflife never follows
                return []
            raise
        copies = [location] + [
            Location(name, location.key)
            for name in self.config.tiers
            if name != location.tier
            and (
                self.catalog.get(name, location.key) is not None
                or run_sync(self.store(name).exists(location.key))
            )
        ]
        if not force:
            holders = self.holders(copies)
            if holders:
                where = ", ".join(copy.tier for copy in copies)
                raise RefusedError(
                    f"rows in {', '.join(holders)} point at {location.key} (on {where}); "
                    "nothing was deleted",
                    hint="delete or change those rows first, or pass --force "
                    "(force=True in Python) to delete it anyway",
                )
        held = actionlog.sizes(self.context, copies)
        for copy in copies:
            run_sync(self.store(copy.tier).delete(copy.key))
            self.catalog.forget(copy.tier, [copy.key])
        actionlog.record(self.context, actionlog.deletions(held, "delete", forced=force))
        return copies

    def holders(self, copies: Sequence[Location]) -> list[str]:
        """The reference sources (table.column) whose rows name any of ``copies`` now."""
        return [
            source.label
            for source in self.sources()
            if any(
                trust.still_referenced([source], self.locator, self.catalog, copy.tier, [copy.key])
                for copy in copies
            )
        ]

    def _refuse_links(self, ref: str) -> None:
        """Raise when a location ``ref`` may name is a symbolic link on a local tier."""
        candidates = self.locator.resolve(ref) or [
            Location(self.config.default_tier, validate_key(ref.strip()))
        ]
        for name in self.config.tiers:
            store = self.store(name)
            if not isinstance(store, LocalStore):
                continue
            for candidate in candidates:
                try:
                    store.path(candidate.key)
                except LinkedPath as exc:
                    raise InvalidKeyError(
                        f"{exc.where}: its path passes through a symbolic link, which a "
                        "local tier never follows; nothing was deleted",
                        hint="remove the link itself outside shelflife if it should go",
                    ) from None
                except ObjectNotFound:
                    continue

    def ls(
        self, prefix: str = "", *, tier: str | None = None, internal: bool = True
    ) -> Iterator[tuple[str, ObjectInfo]]:
        """Objects whose key starts with ``prefix`` as the stores list them now, in key
        order across the tiers (one tier or every tier).

        ``prefix`` matches as on S3, by string: ``docs/2024/rep`` lists
        ``docs/2024/report.pdf`` (the folder ``docs/2024/`` is listed and filtered), and
        ``docs/2024/`` lists what is under that folder. ``internal=False`` leaves out
        shelflife's own folders (``.shelflife-trash/``, ``.shelflife-probe/`` …)."""
        validate_prefix(prefix)
        folder = prefix if prefix.endswith("/") or not prefix else prefix.rpartition("/")[0]
        stores = {name: self.store(name) for name in ([tier] if tier else self.config.tiers)}
        listings = [
            _tier_listing(name, store, folder, prefix, internal) for name, store in stores.items()
        ]
        if all(store.sorted_listing for store in stores.values()):
            yield from heapq.merge(*listings, key=lambda row: row[1].key)
        else:
            yield from sorted(
                (row for listing in listings for row in listing), key=lambda row: row[1].key
            )

    # -- references and orphans ------------------------------------------------------------

    def sources(self) -> list[ReferenceSource]:
        """The declared reference sources, opened."""
        return self.context.sources()

    def refresh_references(self, progress: Progress | None = None) -> ParseReport:
        """Take a fresh snapshot of every reference (for stats and the dashboard)."""
        return trust.refresh(self.context, self.sources(), progress)

    def pin(self, ref: str, until: datetime | None = None) -> Location:
        """Keep an object from ever being collected or expired (until ``until``)."""
        location = self.resolve(ref)
        self.ledger.pin(location.tier, location.key, until, utcnow())
        return location

    def unpin(self, ref: str) -> Location:
        location = self.resolve(ref)
        if not self.ledger.unpin(location.tier, location.key):
            raise UsageError(f"{location.key} on {location.tier} is not pinned")
        return location

    def restore(self, key: str, *, tier: str | None = None) -> Location:
        """Bring a quarantined object back to its key (never over a newer object there)."""
        return run_sync(restore_from_quarantine(self.context, key, tier))

    def release(self, ref: str) -> bool:
        """Delete an object now if no reference, pin or lease holds it; say whether it went."""
        return release_object(self.context, ref)

    def audit(self, *, repair: bool = False) -> AuditReport:
        """Rows that point at missing objects; with ``repair``, repoint those found elsewhere."""
        return audit_references(self.context, repair=repair)

    def references_to(self, ref: str) -> list[str]:
        """The reference sources whose rows name the object now (any spelling)."""
        location = self.resolve(ref)
        return [
            source.label
            for source in self.sources()
            if trust.still_referenced(
                [source], self.locator, self.catalog, location.tier, [location.key]
            )
        ]

    # -- the lifecycle pipeline -------------------------------------------------------------

    def plan(
        self,
        *,
        rule: str | None = None,
        at: datetime | None = None,
        kinds: Sequence[str] = RULE_ACTIONS,
        scan: bool = True,
        progress: Progress | None = None,
        notify: bool = True,
    ) -> Plan:
        """What the rules call for at ``at`` (now by default), after a scan; changes
        nothing that matters. The plan is kept in the catalog (``apply`` its id).
        ``notify`` off: no ``plan-above`` notification."""
        return runs.plan(
            self.context,
            rule=rule,
            at=at,
            kinds=kinds,
            scan_first=scan,
            progress=progress,
            notify_above=notify,
        )

    def run(
        self,
        *,
        dry_run: bool = False,
        rule: str | None = None,
        at: datetime | None = None,
        yes: bool = False,
        kinds: Sequence[str] | None = None,
        command: str = "run",
        scan: bool = True,
        trigger: str = "python",
        rules: list[RuleConfig] | None = None,
        run_id: str | None = None,
        progress: Progress | None = None,
    ) -> RunOutcome:
        """The main job: recover, scan, plan, execute (``dry_run``: plan only).

        ``command`` ``gc``, ``enforce`` or ``expire`` restricts the run to the rules of one
        action (``kinds`` may name them instead)."""
        return runs.run(
            self.context,
            command=command,
            kinds=kinds if kinds is not None else COMMAND_ACTIONS.get(command, RULE_ACTIONS),
            dry_run=dry_run,
            rule=rule,
            at=at,
            yes=yes,
            scan_first=scan,
            trigger=trigger,
            rules=rules,
            run_id=run_id,
            progress=progress,
            dispatcher=self.dispatcher,
        )

    def gc(self, *, mark: str | None = None, **options: Any) -> RunOutcome:
        """``run`` restricted to the collect-orphans rules (same options as :meth:`run`);
        ``mark``: apply that saved plan's orphan collection instead (``gc --mark``)."""
        if mark is not None:
            return self.apply(
                mark,
                yes=options.get("yes", False),
                trigger=options.get("trigger", "python"),
                command="gc",
                progress=options.get("progress"),
            )
        return self.run(command="gc", **options)

    def enforce(self, **options: Any) -> RunOutcome:
        """``run`` restricted to the migrate rules (same options as :meth:`run`)."""
        return self.run(command="enforce", **options)

    def expire(self, **options: Any) -> RunOutcome:
        """``run`` restricted to the expire rules (same options as :meth:`run`)."""
        return self.run(command="expire", **options)

    def apply(
        self,
        plan: Plan | dict[str, Any] | str | Path,
        *,
        yes: bool = False,
        trigger: str = "python",
        command: str = "apply",
        progress: Progress | None = None,
    ) -> RunOutcome:
        """Apply a plan once, re-checking each action: a Plan, its JSON, a plan file, or
        the id of a plan kept in the catalog. ``command`` ``gc`` (or ``enforce``,
        ``expire``) applies only its actions of that rule action."""
        if isinstance(plan, str) and not Path(plan).exists() and _looks_like_id(plan):
            plan = runs.saved_plan(self.context, plan)
        elif isinstance(plan, str | Path):
            plan = runs.read_plan_file(Path(plan))
        if isinstance(plan, dict):
            plan = Plan.from_json(plan)
        return runs.apply(
            self.context,
            plan,
            yes=yes,
            trigger=trigger,
            command=command,
            kinds=COMMAND_ACTIONS.get(command, RULE_ACTIONS),
            progress=progress,
            dispatcher=self.dispatcher,
        )

    def execute_batch(self, run_id: str, plan_now: datetime, items: list[Action]) -> int:
        """Take one batch of a fanned-out run (a Celery worker's task); the number of
        actions taken (0: dropped, its run no longer holds the catalog's lease)."""
        return execute_batch(self.context, run_id, plan_now, items)

    def log(
        self,
        *,
        key: str | None = None,
        rule: str | None = None,
        run: str | None = None,
        tier: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[LogEntry]:
        """The action log: the newest ``limit`` entries matching every filter given,
        oldest first (``key``: a key or any value a reference column holds)."""
        keys = () if key is None else tuple(actionlog.keys_named(self.context, key))
        if key is not None and not keys:
            return []
        chosen = LogFilter(keys, rule, run, tier, outcome, since, until)
        return actionlog.find(self.context, chosen, limit=limit, newest=True)

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """The run history, newest first."""
        return History(self.catalog.engine).list(limit)

    def schedule_status(self, now: datetime | None = None) -> dict[str, Any]:
        """Whether scheduled runs are on time (see :mod:`shelflife.service.schedule`)."""
        return schedule_status(self.context, now)

    # -- migration -------------------------------------------------------------------------

    def recover(self, progress: Progress | None = None) -> dict[str, int]:
        """Complete or undo every migration an interrupted run left unfinished."""
        return recovery.recover(self.context, progress)

    def recall(self, ref: str, *, to: str | None = None) -> Location:
        """Move an object to ``to`` (the default tier), rewriting its rows like a migration."""
        return recovery.recall(self.context, ref, to)

    def fetch(self, ref: str) -> Path:
        """Recall an object to the local tier and return its file, for code that needs one."""
        location = self.recall(ref, to=self.config.default_tier)
        store = self.store(location.tier)
        if not isinstance(store, LocalStore):
            raise UsageError(f"tier {location.tier} is not a local folder; fetch needs one")
        return store.path(location.key)

    def versioned(self, tier: str) -> bool:
        """Whether a tier's bucket keeps versions: ``versioned`` in its config, else asked
        of the store (S3; an answer that cannot be had counts as no)."""
        declared = self.config.tiers[tier].versioned
        if declared is not None:
            return declared
        if tier not in self._versioned:
            answer = False
            if self.config.tiers[tier].scheme == "s3":
                try:
                    answer = bucket_versioned(self.config.tiers[tier])
                except StoreError:
                    answer = False
            self._versioned[tier] = answer
        return self._versioned[tier]

    # -- inventory and stats --------------------------------------------------------------

    def scan(
        self, tiers: list[str] | None = None, progress: Progress | None = None
    ) -> list[ScanResult]:
        """Bring the inventory up to date with every tier (or the ones named)."""
        return runs.scan(self.context, tiers, progress)

    def usage(self) -> list[TierUsage]:
        return usage(self.context)

    def health(self, tiers: list[TierUsage] | None = None) -> Health:
        return classify(tiers if tiers is not None else self.usage(), self.config.health)

    def stats(self, tiers: list[TierUsage] | None = None) -> dict[str, Any]:
        """Usage per tier and health, as ``stats --json`` prints them."""
        return stats_body(self.context, tiers)

    def record_access(self, location: Location) -> None:
        """Record a read for least-recently-used ordering: now, or through the batcher a
        server installs (one write per batch rather than per request)."""
        if self.access is not None:
            self.access(location.tier, location.key)
        else:
            self.catalog.touch(location.tier, [location.key], utcnow())


def _looks_like_id(value: str) -> bool:
    """A plan id (``plan-20261126T101500-a1b2c3``) rather than a file's path."""
    return "/" not in value and "\\" not in value and not value.endswith(".json")


async def _aiter_stream(
    stream: BinaryIO, chunk_size: int = 8 * 1024 * 1024
) -> AsyncIterator[bytes]:
    """A file object's chunks, each read in a worker thread: never on the I/O loop, whose
    other callers a slow source would hold up, and which a source reading through
    shelflife itself (a ``shelflife://`` file) needs free."""
    while chunk := await asyncio.to_thread(stream.read, chunk_size):
        yield chunk


def _writable_target(target: Path) -> None:
    """Refuse a download target that is not a regular file (a device, a fifo, a socket, a
    symbolic link, a folder): the file put in its place would replace it. A regular file
    is overwritten, as ``cp`` does."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise UsageError(
            f"{target} is a folder", hint="give a file name, or another folder to put it in"
        )
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    raise UsageError(
        f"{target} exists and is {kind}; shelflife writes only regular files, and would "
        "replace it: nothing was written",
        hint="give a new file name or a folder, or - to write to stdout (get KEY - > DEST)",
    )


async def _download(store: ObstoreStore, key: str, target: Path) -> None:
    """Write beside ``target`` (created with mode 0666 less the umask), then rename."""
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in store.get(key):
                handle.write(chunk)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


_O_BINARY = getattr(os, "O_BINARY", 0)


async def _stream(store: ObstoreStore, key: str, sink: BinaryIO) -> None:
    async for chunk in store.get(key):
        sink.write(chunk)


INTERNAL_PREFIX = ".shelflife-"  # the first segment of shelflife's own keys


def _tier_listing(
    name: str, store: ObstoreStore, folder: str, prefix: str, internal: bool
) -> Iterator[tuple[str, ObjectInfo]]:
    for chunk in _collect_chunks(store, folder):
        for info in chunk:
            if not info.key.startswith(prefix):
                continue
            if not internal and info.key.startswith(INTERNAL_PREFIX):
                continue
            yield name, info


async def _spool(store: ObstoreStore, key: str, spool: IO[bytes]) -> None:
    async for chunk in store.get(key):
        spool.write(chunk)


def _collect_chunks(store: ObstoreStore, prefix: str) -> Iterator[list[ObjectInfo]]:
    """Iterate an async listing from synchronous code, one chunk at a time."""
    iterator = store.list(prefix).__aiter__()

    async def next_chunk() -> list[ObjectInfo] | None:
        try:
            return await iterator.__anext__()
        except StopAsyncIteration:
            return None

    while (chunk := run_sync(next_chunk())) is not None:
        yield chunk
