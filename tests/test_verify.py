"""How a migration proves each copy (DESIGN I2): by what the store says of the bytes it
received (a tier's ``verify = "checksum"``, the default) or by reading it back
(``verify = "read-back"``); one request per object up to the memory budget; the journal
and the inventory written once per batch, whatever the batch holds.

Each test counts what the migration asked of the destination, or of the catalog, so it
fails if the store is read back when it vouched, or if a batch costs a statement per
object."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from shelflife import Shelf
from shelflife.engine.migrate import MAX_SINGLE_PUT, single_put_limit
from shelflife.stores.base import PutResult
from shelflife.stores.proofs import Hasher
from tests.support.apps import AppTable, make_app_shelf
from tests.support.objects import read
from tests.support.servers import s3_client, tier_config

MiB = 1024 * 1024


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppTable]:
    table = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    yield table
    table.dispose()


def shelf_to(
    tmp_path: Path,
    app: AppTable,
    cloud: dict[str, Any],
    executor: dict[str, Any] | None = None,
) -> Shelf:
    """``local`` (file://) → ``cloud``, every object older than a day moves."""
    tiers = {
        "local": {"url": f"file://{tmp_path / 'local'}", "ref_format": "data/out/{key}"},
        "cloud": {"ref_format": "cold/{key}", **cloud},
    }
    rule = {"id": "age-out", "tier": "local", "action": "migrate", "to": "cloud", "after": "1d"}
    return make_app_shelf(tmp_path, app, tiers=tiers, rules=[rule], executor=executor)


def write_old(shelf: Shelf, app: AppTable, objects: dict[str, bytes]) -> None:
    root = Path(shelf.store("local").location.removeprefix("file://"))
    stamp = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (stamp, stamp))
    app.insert(*(f"data/out/{key}" for key in objects))
    shelf.scan()


class Watched:
    """A destination store that counts reads and checksum questions; ``keeps`` makes it
    keep other bytes than it was sent (the client hashed what it sent), ``answers`` makes
    its uploads' answers vouch for nothing (an ETag that is no MD5, as with KMS keys)."""

    def __init__(self, inner: Any, *, keeps: str | None = None, answers: bool = True) -> None:
        self._inner = inner
        self._keeps = keeps
        self._answers = answers
        self.reads = 0
        self.asked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get(self, key: str, **options: Any) -> Any:
        self.reads += 1
        return self._inner.get(key, **options)

    async def get_bytes(self, key: str) -> bytes:
        self.reads += 1
        data: bytes = await self._inner.get_bytes(key)
        return data

    async def stored_proofs(self, key: str) -> tuple[int, set[str]]:
        self.asked += 1
        found: tuple[int, set[str]] = await self._inner.stored_proofs(key)
        return found

    async def put(self, key: str, source: Any, **options: Any) -> PutResult:
        if self._keeps is None:
            result: PutResult = await self._inner.put(key, source, **options)
            return result if self._answers else replace(result, etag="0" * 32, vouched=False)
        sent = source if isinstance(source, bytes) else b"".join([c async for c in source])
        kept = bytes([sent[0] ^ 0xFF]) + sent[1:] if self._keeps == "flip" else sent[:-10]
        stored = await self._inner.put(key, kept, **options)
        hasher = Hasher(md5=True)
        hasher.update(sent)
        # What a client that hashed the bytes it sent would report: their size and proofs.
        return PutResult(key, len(sent), hasher.checksum(), stored.etag, hasher.proofs())


def watch(shelf: Shelf, **options: Any) -> Watched:
    real = shelf.context.store
    watched = Watched(real("cloud"), **options)
    shelf.context.store = lambda tier: watched if tier == "cloud" else real(tier)  # type: ignore[method-assign]
    return watched


OBJECTS = {f"renders/{i} ä.bin": os.urandom(3000 + 501 * i) for i in range(3)}
KINDS = [
    "file",
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("azure", marks=pytest.mark.azure),
]


@pytest.mark.invariant("I2")
@pytest.mark.parametrize("method", ["checksum", "read-back"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_copy_is_read_back_only_when_the_tier_asks_for_it(
    tmp_path: Path, app: AppTable, request: pytest.FixtureRequest, kind: str, method: str
) -> None:
    cloud = {**tier_config(kind, request, tmp_path / "cold"), "verify": method}
    shelf = shelf_to(tmp_path, app, cloud)
    write_old(shelf, app, OBJECTS)
    watched = watch(shelf)

    outcome = shelf.enforce()

    assert outcome.failed == []
    assert sorted(a.key for a in outcome.actions) == sorted(OBJECTS)
    if method == "read-back":
        assert watched.reads == len(OBJECTS)
    else:
        # S3: the upload's ETag is the MD5 of the bytes sent; a file: written, fsynced and
        # renamed at its size. Azure's ETag is no MD5: its Content-MD5, one HEAD each.
        assert watched.reads == 0
        assert watched.asked == (len(OBJECTS) if kind == "azure" else 0)
    spelling = shelf.config.tiers["cloud"].ref_format
    assert sorted(app.values()) == sorted(spelling.replace("{key}", key) for key in OBJECTS)
    for key, data in OBJECTS.items():
        assert read(shelf, "cloud", key) == data
        row = shelf.catalog.get("cloud", key)
        assert row is not None
        assert row.checksum == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.s3
@pytest.mark.invariant("I2")
@pytest.mark.parametrize("stored", ["reported", "unreported"])
def test_an_upload_whose_answer_vouches_for_nothing_is_verified_another_way(
    tmp_path: Path, app: AppTable, request: pytest.FixtureRequest, stored: str
) -> None:
    """The store's stored checksum (a HEAD) where it matches the bytes sent, else the
    bytes read back: a copy never counts as verified on the upload's word alone."""
    shelf = shelf_to(tmp_path, app, tier_config("s3", request, tmp_path / "cold"))
    write_old(shelf, app, OBJECTS)
    watched = watch(shelf, answers=False)
    if stored == "unreported":

        async def nothing(key: str) -> tuple[int, set[str]]:
            watched.asked += 1
            size = len(OBJECTS[key])
            return size, {"md5:" + "1" * 32}  # an ETag that is no MD5, no stored checksum

        watched.stored_proofs = nothing  # type: ignore[method-assign]

    outcome = shelf.enforce()

    assert outcome.failed == []
    assert sorted(a.key for a in outcome.actions) == sorted(OBJECTS)
    assert watched.asked == len(OBJECTS)
    assert watched.reads == (0 if stored == "reported" else len(OBJECTS))


@pytest.mark.invariant("I2")
@pytest.mark.parametrize("method", ["checksum", "read-back"])
@pytest.mark.parametrize("fault", ["flip", "truncate"])
@pytest.mark.parametrize("kind", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_store_that_keeps_other_bytes_is_caught_either_way(
    tmp_path: Path,
    app: AppTable,
    request: pytest.FixtureRequest,
    kind: str,
    fault: str,
    method: str,
) -> None:
    cloud = {**tier_config(kind, request, tmp_path / "cold"), "verify": method}
    shelf = shelf_to(tmp_path, app, cloud)
    write_old(shelf, app, OBJECTS)
    watch(shelf, keeps=fault)

    outcome = shelf.enforce()

    assert outcome.actions == []
    assert sorted(f.key for f in outcome.failed) == sorted(OBJECTS)
    assert all("verification failed" in f.error for f in outcome.failed)
    assert sorted(app.values()) == sorted(f"data/out/{key}" for key in OBJECTS)
    for key, data in OBJECTS.items():
        assert read(shelf, "local", key) == data
    real = shelf.store("cloud")
    assert not [info for chunk in _listing(real) for info in chunk]  # no copy left behind


def _listing(store: Any) -> list[Any]:
    import asyncio

    async def go() -> list[Any]:
        return [chunk async for chunk in store.list()]

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("memory", "concurrency", "objects", "floor", "expected"),
    [
        (256 * MiB, 16, 500, 8 * MiB, 16 * MiB),  # a full batch: 16 in flight share it
        (256 * MiB, 16, 8, 8 * MiB, 32 * MiB),  # 8 objects: 8 in flight, 32 MiB each
        (256 * MiB, 16, 1, 8 * MiB, 256 * MiB),  # one object may take it all
        (16 * MiB, 16, 500, 8 * MiB, 8 * MiB),  # never below the tier's threshold
        (64 * 1024**3, 1, 1, 8 * MiB, MAX_SINGLE_PUT),  # nor above one request's limit
    ],
)
def test_the_single_request_limit_shares_the_memory_budget(
    memory: int, concurrency: int, objects: int, floor: int, expected: int
) -> None:
    assert single_put_limit(memory, concurrency, objects, floor) == expected


@pytest.mark.s3
@pytest.mark.parametrize(("memory", "parts"), [("256MiB", 0), ("8MiB", 3)])
def test_objects_go_up_in_one_request_within_the_memory_budget(
    tmp_path: Path,
    app: AppTable,
    request: pytest.FixtureRequest,
    s3_endpoint: str,
    memory: str,
    parts: int,
) -> None:
    """12 MiB objects on a tier that sends parts above 5 MiB: one request each while the
    batch's share of ``transfer_memory`` holds them, 5 MiB parts once it does not —
    verified by the upload's ETag either way, never read back."""
    cloud = tier_config("s3", request, tmp_path / "cold")
    cloud.update(multipart_threshold="5MiB", multipart_chunk_size="5MiB")
    executor = {"transfer_memory": memory, "concurrency": 2}
    shelf = shelf_to(tmp_path, app, cloud, executor)
    objects = {f"big/{i}.bin": os.urandom(12 * MiB + i) for i in range(2)}
    write_old(shelf, app, objects)
    watched = watch(shelf)

    outcome = shelf.enforce()

    assert outcome.failed == []
    assert watched.reads == 0
    bucket, prefix = str(cloud["url"]).removeprefix("s3://").split("/", 1)
    client = s3_client(s3_endpoint)
    for key, data in objects.items():
        etag = client.head_object(Bucket=bucket, Key=f"{prefix}/{key}")["ETag"].strip('"')
        if parts:
            assert etag.endswith(f"-{parts}")
        else:
            assert etag == hashlib.md5(data).hexdigest()  # one request: the bytes' MD5
        assert read(shelf, "cloud", key) == data


def catalog_statements(
    tmp_path: Path, request: pytest.FixtureRequest, count: int
) -> dict[str, int]:
    """Statements a migration of ``count`` objects (one batch) sends to the catalog, by
    the table they write or read."""
    tmp_path.mkdir()
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    shelf = shelf_to(tmp_path, app, tier_config("file", request, tmp_path / "cold"))
    write_old(shelf, app, {f"k/{i:03d}": os.urandom(100 + i) for i in range(count)})
    seen: dict[str, int] = {}

    def tally(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = statement.lower()
        for table in ("journal", "objects"):
            if f" {table}" in text or f'"{table}"' in text:
                seen[table] = seen.get(table, 0) + 1

    event.listen(shelf.catalog.engine, "before_cursor_execute", tally)
    try:
        outcome = shelf.enforce(scan=False)
    finally:
        event.remove(shelf.catalog.engine, "before_cursor_execute", tally)
        app.dispose()
    assert len(outcome.actions) == count
    assert outcome.failed == []
    return seen


def test_a_batch_costs_the_same_statements_whatever_it_holds(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The journal's steps and the inventory's reads and writes are one statement per
    batch (each journaled before it is taken), not one per object."""
    few = catalog_statements(tmp_path / "few", request, 3)
    many = catalog_statements(tmp_path / "many", request, 40)
    assert many == few
    assert few["journal"] >= 6  # copying, copied, repointing, deleting, done, + recovery
