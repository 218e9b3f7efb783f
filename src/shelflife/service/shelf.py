"""The service layer: one object that opens a configuration and does what the CLI,
the HTTP API and the scheduler ask, through the same functions.

``url``, ``get``, ``open`` and ``delete`` accept a key or any value a reference column
holds (``s3://bucket/outputs/x.mp4``, ``data/storage/outputs/x.mp4``); the object is
looked for on the tier the value names first, then on the others, so a row's value
keeps working whichever tier the object sits on today.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key, validate_prefix
from shelflife.base.progress import Progress
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.history import History, RunRecord
from shelflife.catalog.ledger import Ledger
from shelflife.catalog.lock import RunLock
from shelflife.config import Config, load_config
from shelflife.config.model import RuleConfig
from shelflife.engine.collect import OrphanCollector, still_referenced
from shelflife.engine.planner import Plan
from shelflife.engine.scan import ScanResult, scan_tier
from shelflife.engine.stats import Health, TierUsage, classify, stats_json, tier_usage
from shelflife.errors import ObjectNotFound, StoreError, UsageError
from shelflife.model.actions import Action, Failure
from shelflife.model.locations import Location, Locator
from shelflife.references.sources import Databases, ParseReport, ReferenceSource, open_sources
from shelflife.service import recovery as tiering
from shelflife.service import runs as lifecycle
from shelflife.service.audit import AuditReport, audit_references
from shelflife.service.objects import (
    GcOutcome,
    collect_garbage,
    release_object,
    restore_from_quarantine,
)
from shelflife.service.recovery import EnforceOutcome
from shelflife.service.runs import RunOutcome
from shelflife.stores import ObjectInfo, ObstoreStore, open_store
from shelflife.stores.local import LocalStore

_SPOOL_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a put produced: where the object is, and the value a row should store."""

    tier: str
    key: str
    size: int
    checksum: str
    ref: str

    def as_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "key": self.key,
            "size": self.size,
            "checksum": self.checksum,
            "ref": self.ref,
        }


class _ClassOrInstance:
    """``Shelf.open(config)`` opens a shelf; ``shelf.open(ref)`` opens an object.

    Both spellings are part of the public API, so one name dispatches on whether it is
    reached through the class or through an instance.
    """

    def __init__(self, on_class: Any, on_instance: Any) -> None:
        self._on_class = on_class
        self._on_instance = on_instance

    def __get__(self, instance: object, owner: type) -> Any:
        if instance is None:
            return self._on_class.__get__(None, owner)
        return self._on_instance.__get__(instance, owner)


class Shelf:
    """A configuration opened: its tiers' stores, its catalog, its rules."""

    def __init__(self, config: Config, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog or Catalog.open(config.catalog.url)
        self.ledger = Ledger(self.catalog.engine)
        self.locator = Locator(config)
        self.databases = Databases(config)
        self._stores: dict[str, ObstoreStore] = {}
        self._versioned: dict[str, bool] = {}
        # set by a server to batch access-time writes (see shelflife.api.access)
        self.access: Callable[[str, str], None] | None = None

    @classmethod
    def from_config(cls, config: Config | str | Path | None = None) -> Shelf:
        """Open a config file (or the one found by the usual search) or a Config."""
        if not isinstance(config, Config):
            config = load_config(config)
        return cls(config)

    def close(self) -> None:
        self.databases.dispose()
        self.catalog.close()

    def __enter__(self) -> Shelf:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- stores ---------------------------------------------------------------------------

    def store(self, tier: str) -> ObstoreStore:
        """The store of a tier, opened on first use."""
        if tier not in self.config.tiers:
            raise UsageError(
                f"unknown tier {tier!r}", hint=f"known tiers: {', '.join(self.config.tiers)}"
            )
        if tier not in self._stores:
            self._stores[tier] = open_store(self.config.tiers[tier], name=tier)
        return self._stores[tier]

    def resolve(self, ref: str) -> Location:
        """Find where the object a key or reference value names lives today.

        The value is read by the one resolver (:class:`~shelflife.model.locations.Locator`):
        each location it may name is tried on its own tier first, then on the others
        (a row keeps working whichever tier the object sits on today)."""
        candidates = self.locator.resolve(ref)
        if not candidates:
            candidates = [Location(self.config.default_tier, validate_key(ref.strip()))]
        order: list[Location] = list(candidates)
        for candidate in candidates:
            order += [
                Location(tier, candidate.key)
                for tier in self.config.tiers
                if Location(tier, candidate.key) not in order
            ]
        for candidate in order:
            if self.catalog.get(candidate.tier, candidate.key) is not None:
                return candidate
        for candidate in order:
            if run_sync(self.store(candidate.tier).exists(candidate.key)):
                return candidate
        tiers = list(dict.fromkeys(loc.tier for loc in order))
        raise ObjectNotFound(
            f"no object {candidates[0].key!r} on any tier ({', '.join(tiers)})",
            hint="run 'shelflife scan' if it was written outside shelflife, or 'shelflife ls'",
        )

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
        store = self.store(tier)
        payload: Any
        if isinstance(source, str | Path):
            path = Path(source)
            if not path.is_file():
                raise UsageError(f"{path} is not a file", hint="give the path of a file to store")
            payload = path
        elif isinstance(source, bytes | bytearray | memoryview):
            payload = bytes(source)
        else:
            payload = _aiter_stream(source)
        # The lease keeps the new object out of orphan collection while it is written and
        # for upload_lease after, long enough for the application to insert its row.
        started = utcnow()
        self.ledger.acquire_lease(tier, key, started + self.config.tiers[tier].upload_lease)
        result = run_sync(store.put(key, payload, overwrite=overwrite))
        self.catalog.record_put(
            tier, key, size=result.size, checksum=result.checksum, etag=result.etag, now=utcnow()
        )
        if tags:
            self.catalog.set_tags(tier, key, tags)
        ref = self.locator.render(Location(tier, key))
        return StoredObject(tier, key, result.size, result.checksum, ref)

    def get(self, ref: str) -> bytes:
        """The object's bytes, in memory: use :meth:`download` or :meth:`open` for large ones."""
        location = self.resolve(ref)
        self.record_access(location)
        return run_sync(self.store(location.tier).get_bytes(location.key))

    def download(self, ref: str, dest: str | Path) -> Path:
        """Stream the object into a file (or into a folder, under its name); return the file."""
        location = self.resolve(ref)
        store = self.store(location.tier)
        self.record_access(location)
        target = Path(dest)
        if target.is_dir():
            target = target / Path(location.key).name
        target.parent.mkdir(parents=True, exist_ok=True)
        run_sync(_download(store, location.key, target))
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

    open = _ClassOrInstance(from_config, open_object)

    def url(self, ref: str) -> str:
        """A URL for the object: public on a local tier, freshly presigned on object stores."""
        location = self.resolve(ref)
        self.record_access(location)
        return run_sync(self.store(location.tier).url(location.key))

    def delete(self, ref: str) -> Location:
        """Delete the object from its tier and the inventory; already gone is not an error."""
        location = self.resolve(ref)
        run_sync(self.store(location.tier).delete(location.key))
        self.catalog.forget(location.tier, [location.key])
        return location

    def ls(self, prefix: str = "", *, tier: str | None = None) -> Iterator[tuple[str, ObjectInfo]]:
        """Objects under ``prefix`` as the stores list them now, tier by tier."""
        validate_prefix(prefix)
        for name in [tier] if tier else list(self.config.tiers):
            store = self.store(name)
            for chunk in _collect_chunks(store, prefix):
                for info in chunk:
                    yield name, info

    # -- references and orphans ------------------------------------------------------------

    def sources(self) -> list[ReferenceSource]:
        """The declared reference sources, opened."""
        return open_sources(self.config, self.databases, self.locator)

    def collector(self) -> OrphanCollector:
        return OrphanCollector(
            self.config,
            self.catalog,
            self.ledger,
            self.locator,
            self.sources(),
            self.store,
            self.databases,
        )

    def refresh_references(self, progress: Progress | None = None) -> ParseReport:
        """Take a fresh snapshot of every reference (for stats and the dashboard)."""
        return self.collector().snapshot(utcnow(), progress)[1]

    def gc(
        self,
        *,
        dry_run: bool = False,
        rule: str | None = None,
        at: datetime | None = None,
        mark: int | None = None,
        trigger: str = "python",
        progress: Progress | None = None,
    ) -> GcOutcome:
        """Collect orphans per the collect-orphans rules (see :mod:`shelflife.engine.collect`)."""

        def call(run_id: str | None) -> GcOutcome:
            outcome = collect_garbage(
                self.collector(),
                lock=lambda: RunLock(self.catalog, "shelflife gc"),
                recover=lambda: run_sync(tiering.migrator(self).recover(progress)),
                dry_run=dry_run,
                rule=rule,
                at=at,
                mark=mark,
                progress=progress,
            )
            outcome.run_id = run_id
            return outcome

        if dry_run:
            return call(None)
        return lifecycle.recorded(
            self,
            "gc",
            trigger,
            call,
            lambda o: (o.status, list(o.actions), list(o.skipped), list(o.failed)),
        )

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
        return run_sync(restore_from_quarantine(self, key, tier))

    def release(self, ref: str) -> bool:
        """Delete an object now if no reference, pin or lease holds it; say whether it went."""
        return release_object(self, ref)

    def audit(self, *, repair: bool = False) -> AuditReport:
        """Rows that point at missing objects; with ``repair``, repoint those found elsewhere."""
        return audit_references(self, repair=repair)

    # -- migration -------------------------------------------------------------------------

    def enforce(
        self,
        *,
        dry_run: bool = False,
        rule: str | None = None,
        at: datetime | None = None,
        trigger: str = "python",
        progress: Progress | None = None,
    ) -> EnforceOutcome:
        """Carry out the migrate rules: keep tiers under their watermarks, move aged objects."""

        def call(run_id: str | None) -> EnforceOutcome:
            return tiering.enforce(
                self, dry_run=dry_run, rule=rule, at=at, progress=progress, run_id=run_id
            )

        if dry_run:
            return call(None)

        def summary(o: EnforceOutcome) -> Any:
            body = o.as_json()
            actions = [Action.from_json(item) for item in body["actions"]]
            rule = actions[0].rule if actions else "migrate"
            failed = [Failure(rule, f["tier"], f["key"], f["error"]) for f in body["failed"]]
            return body["status"], actions, [], failed

        return lifecycle.recorded(self, "enforce", trigger, call, summary)

    def recover(self, progress: Progress | None = None) -> dict[str, int]:
        """Complete or undo every migration an interrupted run left unfinished."""
        return tiering.recover(self, progress)

    def recover_unlocked(self, progress: Progress | None = None) -> dict[str, int]:
        """:meth:`recover` for a caller that already holds the run lock."""
        return run_sync(tiering.migrator(self).recover(progress))

    # -- lifecycle -------------------------------------------------------------------------

    def plan(
        self,
        *,
        rule: str | None = None,
        at: datetime | None = None,
        kinds: tuple[str, ...] = lifecycle.ACTION_KINDS,
        progress: Progress | None = None,
    ) -> Plan:
        """What the rules call for at ``at`` (now by default); changes nothing."""
        return lifecycle.plan(self, rule=rule, at=at, kinds=kinds, progress=progress)

    def run(
        self,
        *,
        dry_run: bool = False,
        rule: str | None = None,
        at: datetime | None = None,
        yes: bool = False,
        kinds: tuple[str, ...] = lifecycle.ACTION_KINDS,
        command: str = "run",
        scan: bool = True,
        trigger: str = "python",
        rules: list[RuleConfig] | None = None,
        run_id: str | None = None,
        progress: Progress | None = None,
    ) -> RunOutcome:
        """The main job: recover, scan, plan every rule, apply (``dry_run``: plan only)."""
        return lifecycle.run(
            self,
            command=command,
            kinds=kinds,
            dry_run=dry_run,
            rule=rule,
            at=at,
            yes=yes,
            scan=scan,
            trigger=trigger,
            rules=rules,
            run_id=run_id,
            progress=progress,
        )

    def apply(
        self,
        plan: Plan | dict[str, Any] | str | Path,
        *,
        yes: bool = False,
        trigger: str = "python",
        progress: Progress | None = None,
    ) -> RunOutcome:
        """Apply a plan (a Plan, its JSON, or a plan file) once, re-checking each action."""
        if isinstance(plan, str | Path):
            plan = lifecycle.read_plan_file(Path(plan))
        if isinstance(plan, dict):
            plan = Plan.from_json(plan)
        return lifecycle.apply(self, plan, yes=yes, trigger=trigger, progress=progress)

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """The run history, newest first."""
        return History(self.catalog.engine).list(limit)

    def versioned(self, tier: str) -> bool:
        """Whether a tier's bucket keeps versions: ``versioned`` in its config, else asked
        of the store (S3; an answer that cannot be had counts as no)."""
        declared = self.config.tiers[tier].versioned
        if declared is not None:
            return declared
        if tier not in self._versioned:
            answer = False
            if self.config.tiers[tier].scheme == "s3":
                from shelflife.service.policy import bucket_versioned

                try:
                    answer = bucket_versioned(self.config.tiers[tier])
                except StoreError:
                    answer = False
            self._versioned[tier] = answer
        return self._versioned[tier]

    def recall(self, ref: str, *, to: str | None = None) -> Location:
        """Move an object to ``to`` (the default tier), rewriting its rows like a migration."""
        return tiering.recall(self, ref, to)

    def fetch(self, ref: str) -> Path:
        """Recall an object to the local tier and return its file, for code that needs one."""
        location = self.recall(ref, to=self.config.default_tier)
        store = self.store(location.tier)
        if not isinstance(store, LocalStore):
            raise UsageError(f"tier {location.tier} is not a local folder; fetch needs one")
        return store.path(location.key)

    # -- inventory and stats --------------------------------------------------------------

    def scan(
        self, tiers: list[str] | None = None, progress: Progress | None = None
    ) -> list[ScanResult]:
        """Bring the inventory up to date with every tier (or the ones named)."""
        names = tiers or list(self.config.tiers)
        stores = [(name, self.store(name)) for name in names]
        return [run_sync(scan_tier(self.catalog, name, store, progress)) for name, store in stores]

    def usage(self) -> list[TierUsage]:
        stores = {
            name: self.store(name)
            for name, tier in self.config.tiers.items()
            if tier.capacity == "disk"
        }
        snapshot = self.ledger.latest_snapshot()
        counts = None if snapshot is None else self.ledger.reference_counts(snapshot["id"])
        quarantined = self.ledger.quarantined_totals()
        return tier_usage(self.config, self.catalog, stores, counts, quarantined)

    def health(self, usage: list[TierUsage] | None = None) -> Health:
        return classify(usage if usage is not None else self.usage(), self.config.health)

    def stats(self, usage: list[TierUsage] | None = None) -> dict[str, Any]:
        """Usage per tier and health, as ``stats --json`` prints them."""
        usage = self.usage() if usage is None else usage
        body = stats_json(usage, self.health(usage))
        for name, tier in self.config.tiers.items():
            if tier.scheme != "s3" or not self.versioned(name):
                continue
            from shelflife.service.policy import noncurrent_bytes

            entry = body["tiers"][name]
            entry["versioned"] = True
            try:
                entry["noncurrent_objects"], entry["noncurrent_bytes"] = noncurrent_bytes(tier)
            except StoreError:
                entry["noncurrent_objects"] = entry["noncurrent_bytes"] = None
        return body

    def record_access(self, location: Location) -> None:
        """Record a read for least-recently-used ordering: now, or through the batcher a
        server installs (one write per batch rather than per request)."""
        if self.access is not None:
            self.access(location.tier, location.key)
        else:
            self.catalog.touch(location.tier, [location.key], utcnow())

    def references_to(self, ref: str) -> list[str]:
        """The reference sources whose rows name the object now (any spelling)."""
        location = self.resolve(ref)
        return [
            source.label
            for source in self.sources()
            if still_referenced([source], self.locator, self.catalog, location.tier, [location.key])
        ]


async def _aiter_stream(stream: BinaryIO, chunk_size: int = 8 * 1024 * 1024) -> Any:
    while chunk := stream.read(chunk_size):
        yield chunk


async def _download(store: ObstoreStore, key: str, target: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in store.get(key):
                handle.write(chunk)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise


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
