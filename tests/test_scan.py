"""Scans by difference: a listing compared with the inventory in byte order, only the
difference written — on SQLite and on the real PostgreSQL server (whose large batches go
through COPY), over a real local folder and the S3 server."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from shelflife.catalog import Catalog
from shelflife.catalog.catalog import KEY_ORDER
from shelflife.config.model import TierConfig
from shelflife.engine.scan import ScanResult, scan_tier
from shelflife.stores import open_store
from shelflife.stores.base import Entry
from shelflife.stores.local import LocalStore, _walk
from shelflife.stores.memory import MemoryStore
from tests.support.servers import make_s3_bucket, s3_tier

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Names whose keys sort differently by bytes than by a naive walk or a locale:
# '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0', upper case before lower, non-ASCII last.
TRAPS = ["a-c", "a.b", "a/b", "a/c/d", "a0", "a b", "B", "b", "é", "ä/x", "z", "🎬", "a.b.c/d"]


_WRITE_TO_OBJECTS = re.compile(r"\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?objects\b", re.I)


class WriteCounter:
    """Counts the statements that change the objects table (one executemany is one)."""

    def __init__(self, catalog: Catalog) -> None:
        self.statements: list[str] = []
        event.listen(catalog.engine, "before_cursor_execute", self._seen)
        self.catalog = catalog

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _WRITE_TO_OBJECTS.match(statement):
            self.statements.append(statement)

    def close(self) -> None:
        event.remove(self.catalog.engine, "before_cursor_execute", self._seen)


def scan(catalog: Catalog, store: Any, tier: str = "t") -> ScanResult:
    return asyncio.run(scan_tier(catalog, tier, store))


def fill(folder: Path, keys: list[str]) -> None:
    for key in keys:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())


def test_an_unchanged_tier_is_rescanned_without_a_write(catalog: Catalog, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "tier")
    fill(tmp_path / "tier", [f"d{i % 13}/f{i:05d}" for i in range(1200)] + TRAPS)
    first = scan(catalog, store)
    assert (first.objects, first.new, first.changed, first.removed) == (1213, 1213, 0, 0)
    counter = WriteCounter(catalog)
    try:
        again = scan(catalog, store)
    finally:
        counter.close()
    assert (again.objects, again.new, again.changed, again.removed) == (1213, 0, 0, 0)
    assert counter.statements == []  # nothing written: not one row, not one mark
    assert catalog.totals()["t"].objects == 1213


def test_new_changed_and_vanished_objects_are_written(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "tier"
    store = LocalStore(root)
    fill(root, ["keep", "change", "gone", "a/b", "a-c"])
    scan(catalog, store)
    catalog.record_put("t", "change", size=6, checksum="sha256:old", etag=None, now=T0)
    (root / "change").write_bytes(b"longer now")
    (root / "gone").unlink()
    (root / "a.b").write_bytes(b"new")
    result = scan(catalog, store)
    assert (result.new, result.changed, result.removed) == (1, 1, 1)
    keys = [row.key for row in catalog.iter_objects("t")]
    assert keys == ["a-c", "a.b", "a/b", "change", "keep"]
    changed = catalog.get("t", "change")
    assert changed is not None
    assert changed.size == len(b"longer now")
    assert changed.checksum is None  # the bytes changed: the old checksum is not theirs


def test_a_kept_object_keeps_what_only_the_catalog_knows(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "tier"
    store = LocalStore(root)
    fill(root, ["k"])
    scan(catalog, store)
    catalog.set_tags("t", "k", {"team": "video"})
    catalog.touch("t", ["k"], T0)
    scan(catalog, store)
    row = catalog.get("t", "k")
    assert row is not None
    assert row.tags is not None
    assert "video" in row.tags
    assert row.last_accessed_at == T0


def test_uploads_during_a_scan_are_not_forgotten(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object written by shelflife while the listing runs, into a folder the walk has
    read already: the catalog has it (the inventory page holding it is read after the
    upload), the listing does not. The scan keeps it."""
    monkeypatch.setattr(catalog, "scan_page", 500)
    root = tmp_path / "tier"
    fill(root, [f"k{i:04d}" for i in range(3000)])
    scan(catalog, LocalStore(root))
    result = scan(catalog, RacingStore(root, catalog))
    assert (result.objects, result.removed) == (3000, 0)  # the listing did not see it
    assert catalog.get("t", "k1500-upload") is not None
    assert scan(catalog, LocalStore(root)).objects == 3001  # the next listing does


class RacingStore(LocalStore):
    """A local tier whose listing is joined by an upload after its first chunk."""

    def __init__(self, root: Path, catalog: Catalog) -> None:
        super().__init__(root)
        self.catalog = catalog

    async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        first = True
        async for chunk in super().entries(prefix):
            yield chunk
            if first:
                first = False
                (self.root / "k1500-upload").write_bytes(b"fresh")
                await asyncio.to_thread(
                    self.catalog.record_put,
                    "t",
                    "k1500-upload",
                    size=5,
                    checksum="sha256:x",
                    etag="e",
                    now=datetime.now(UTC),
                )


class ShuffledStore(MemoryStore):
    """A store that claims key order but lists out of it."""

    async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        found = [entry async for chunk in super().entries(prefix) for entry in chunk]
        random.Random(7).shuffle(found)
        for start in range(0, len(found), 100):
            yield found[start : start + 100]


def test_a_listing_out_of_order_is_scanned_by_upsert(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"shuffled-{time.monotonic_ns()}"
    store = ShuffledStore(name)
    keys = [f"k{i:04d}" for i in range(700)] + TRAPS

    async def put_all() -> None:
        await asyncio.gather(*(store.put(key, key.encode()) for key in keys))

    asyncio.run(put_all())
    catalog.record_put("t", "vanished", size=1, checksum=None, etag="x", now=T0)
    catalog.set_tags("t", "k0001", None)
    result = scan(catalog, store)
    assert "does not list in key order" in caplog.text
    assert result.objects == len(keys)
    assert result.removed == 1  # the row no listing holds, and only it
    assert sorted(row.key for row in catalog.iter_objects("t")) == sorted(keys)
    MemoryStore.forget(name)


def test_a_failed_listing_forgets_nothing(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "tier"
    fill(root, [f"k{i:04d}" for i in range(2500)])
    scan(catalog, LocalStore(root))
    for i in range(0, 2500, 2):
        (root / f"k{i:04d}").unlink()  # half vanish, but the next listing fails midway

    class Failing(LocalStore):
        async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
            count = 0
            async for chunk in super().entries(prefix):
                yield chunk
                count += 1
                if count == 1:
                    raise OSError("the disk went away")

    with pytest.raises(OSError, match="went away"):
        scan(catalog, Failing(root))
    assert catalog.totals()["t"].objects == 2500  # nothing forgotten on a partial listing
    assert scan(catalog, LocalStore(root)).removed == 1250  # a complete one does


@pytest.mark.s3
def test_an_object_store_is_scanned_by_difference(catalog: Catalog, s3_endpoint: str) -> None:
    store = open_store(TierConfig(**s3_tier(s3_endpoint, make_s3_bucket(s3_endpoint))))
    keys = [f"p/{i:04d}" for i in range(600)] + TRAPS

    async def put_all() -> None:
        await asyncio.gather(*(store.put(key, b"v1") for key in keys))

    asyncio.run(put_all())
    first = scan(catalog, store)
    assert (first.new, first.changed) == (len(keys), 0)
    asyncio.run(store.put("a/b", b"version two"))
    asyncio.run(store.delete_many(["z", "p/0000"]))
    again = scan(catalog, store)
    assert (again.new, again.changed, again.removed) == (0, 1, 2)
    assert catalog.totals()["t"].objects == len(keys) - 2


# -- the walk's key order -----------------------------------------------------------------


@pytest.fixture(params=["compiled", "python"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a walk reads a folder: the compiled module, and the Python it falls back to."""
    from shelflife.stores import local

    if request.param == "python":
        monkeypatch.setattr(local, "_read_folder", local._read_folder_py)
    elif local._read_folder is local._read_folder_py:
        if os.environ.get("CI"):
            pytest.fail("shelflife.stores._folder is not built: the install builds it here")
        pytest.skip("shelflife.stores._folder is not built (no C compiler at install)")
    return str(request.param)


_NAME = st.text(alphabet=st.sampled_from(list("ab-._/ 0Zé🎬#")), min_size=1, max_size=6).filter(
    lambda name: not name.startswith("/") and not name.endswith("/") and "//" not in name
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.lists(_NAME, min_size=1, max_size=25, unique=True))
def test_the_walk_lists_keys_in_byte_order(
    tmp_path_factory: pytest.TempPathFactory, reader: str, keys: list[str]
) -> None:
    root = tmp_path_factory.mktemp("walk")
    made = []
    for key in keys:
        segments = key.split("/")
        if any(s in (".", "..") for s in segments):
            continue
        path = root.joinpath(*segments)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a file where a folder is needed, or the reverse
        made.append(key)
    expected = sorted(
        (
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.is_file() and not _staging(path.name)
        ),
        key=lambda k: k.encode(),
    )
    walked = [entry[0] for entry in _walk(str(root), str(root)) if entry is not None]
    assert walked == expected


def _wide_and_deep(root: Path) -> list[str]:
    """Folders beside folders at three levels, files between them: every folder is read
    ahead of the walk while its parent's files and earlier folders are handed out."""
    keys = []
    for a in range(6):
        keys.append(f"a{a}-top")
        for b in range(5):
            keys += [f"a{a}/b{b}/c{c}/f" for c in range(4)]
            keys.append(f"a{a}/b{b}-x")
    fill(root, keys)
    return sorted(keys, key=lambda k: k.encode())


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_folders_read_ahead_come_in_key_order(tmp_path: Path, reader: str) -> None:
    root = tmp_path / "tier"
    expected = _wide_and_deep(root)
    before = _open_fds()
    assert [entry[0] for entry in _walk(str(root), str(root)) if entry] == expected
    assert _open_fds() == before


def test_a_walk_abandoned_midway_closes_every_folder_read_ahead(
    tmp_path: Path, reader: str
) -> None:
    """Stopping a walk (a failed scan, a listing cut short) closes the folders it holds
    and those its readers opened ahead of it, and stops its reader threads."""
    import threading

    from shelflife.stores.local import _walk_runs

    root = tmp_path / "tier"
    _wide_and_deep(root)
    before = _open_fds()
    runs = _walk_runs(str(root), str(root))
    taken = [next(runs) for _ in range(7)]
    assert taken[-1][0]  # well inside the tree, folders open at every level
    assert len(_open_fds() - before) >= 3
    runs.close()
    assert _open_fds() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("shelflife-walk")]


def test_a_deep_tree_holds_one_folder_open_per_level_below_the_read_ahead(
    tmp_path: Path, reader: str
) -> None:
    """Folders deeper than READ_AHEAD_DEPTH are read one at a time, so a deep tree holds
    about one open folder per level, not three."""
    from shelflife.stores.local import READ_AHEAD, READ_AHEAD_DEPTH, _walk_runs

    root = tmp_path / "tier"
    depth = READ_AHEAD_DEPTH + 30
    chain = "/".join(f"l{level}" for level in range(depth))
    keys = [f"{chain}/leaf"]
    for level in range(1, depth):  # two folders beside each folder of the chain
        parent = "/".join(f"l{i}" for i in range(level))
        keys += [f"{parent}/m{level}/f", f"{parent}/n{level}/f"]
    fill(root, keys)
    before = _open_fds()
    runs = _walk_runs(str(root), str(root))
    held = 0
    for run, _ in runs:
        held = max(held, len(_open_fds() - before))
        if run and run[0][0] == keys[0]:
            break
    runs.close()
    assert held >= depth  # the whole chain is open at the leaf
    assert held <= (READ_AHEAD + 1) * READ_AHEAD_DEPTH + (depth - READ_AHEAD_DEPTH) + 2
    assert _open_fds() == before


def test_a_cancelled_listing_closes_its_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan cancelled while the next chunk is being walked waits for that thread, then
    closes the walk: the task ends cancelled, no folder stays open, no reader thread."""
    import threading

    from shelflife.stores import local

    root = tmp_path / "tier"
    fill(root, [f"d{i}/f" for i in range(8)])
    monkeypatch.setattr(local, "WALK_CHUNK", 1)
    read = local._read_folder

    def slow(fd: int, prefix: str) -> Any:
        if prefix == "d1/":  # the second chunk is still being walked when the scan stops
            time.sleep(0.5)
        return read(fd, prefix)

    monkeypatch.setattr(local, "_read_folder", slow)
    store = LocalStore(root)
    before = _open_fds()
    got: list[list[Entry]] = []

    async def cancel_midway() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for chunk in store.entries():
                got.append(chunk)
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert 0 < len(got) < 8
    assert _open_fds() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("shelflife-walk")]


def test_an_unreadable_folder_fails_the_walk_where_it_falls(
    tmp_path: Path, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder read ahead that cannot be read raises when the walk reaches it, after
    every key before it, and leaves no folder open."""
    from shelflife.stores import local

    root = tmp_path / "tier"
    fill(root, ["a/x", "b/y", "b/z/deep", "c/z"])
    read = local._read_folder

    def failing(fd: int, prefix: str) -> Any:
        if prefix == "b/":
            raise PermissionError(13, "Permission denied")
        return read(fd, prefix)

    monkeypatch.setattr(local, "_read_folder", failing)
    before = _open_fds()
    walked: list[str] = []

    def walk() -> None:
        walked.extend(entry[0] if entry else "" for entry in _walk(str(root), str(root)))

    with pytest.raises(PermissionError):
        walk()
    assert walked == ["a/x"]
    assert _open_fds() == before


def _staging(name: str) -> bool:
    """A name the walk leaves out: what a local write stages in (``…#<digits>``)."""
    _, mark, digits = name.rpartition("#")
    return bool(mark) and digits.isascii() and digits.isdigit()


def test_the_walk_never_enters_a_link(tmp_path: Path, reader: str) -> None:
    root = tmp_path / "tier"
    fill(root, ["in/a"])
    outside = tmp_path / "outside"
    fill(outside, ["secret"])
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret", root / "file-link")
    walked = list(_walk(str(root), str(root)))
    assert [entry[0] for entry in walked if entry is not None] == ["in/a"]
    assert walked.count(None) == 2


def test_file_tier_keys_in_a_listing_are_what_the_store_accepts(
    tmp_path: Path, reader: str
) -> None:
    root = tmp_path / "tier"
    for name in ["ok", "tab\there", "back\\slash", "x#123", "x#abc", "ctrl\x7f"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "bad\x01dir").mkdir()
    (root / "bad\x01dir" / "inner").write_bytes(b"")
    store = open_store(TierConfig(url=f"file://{root}", create=True))
    listed = asyncio.run(_keys(store))
    assert listed == ["ok", "x#abc"]


async def _keys(store: Any) -> list[str]:
    return [entry[0] async for chunk in store.entries() for entry in chunk]


def test_vanished_rows_are_marked_a_batch_at_a_time(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing that skips a long range (a folder emptied, a wrong mount) marks what
    vanished in batches, never all in one list."""
    root = tmp_path / "tier"
    fill(root, [f"k{i:04d}" for i in range(1500)])
    scan(catalog, LocalStore(root))
    for i in range(1, 1500):
        (root / f"k{i:04d}").unlink()
    monkeypatch.setattr("shelflife.engine.scan.WRITE_BATCH", 200)
    sizes: list[int] = []
    real = catalog.mark_vanished

    def counted(tier: str, keys: Any, scan_id: int) -> None:
        sizes.append(len(keys))
        real(tier, keys, scan_id)

    monkeypatch.setattr(catalog, "mark_vanished", counted)
    result = scan(catalog, LocalStore(root))
    assert result.removed == 1499
    assert max(sizes) <= 200
    assert [row.key for row in catalog.iter_objects("t")] == ["k0000"]


def test_a_resumed_listing_that_repeats_keys_lists_each_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listing cut short is resumed after its last key; a server that ignores the
    offset (Azurite does) and lists from the start again yields no key twice. The fault
    is injected in obstore's listing call."""
    from shelflife.stores import _obstore

    real_list = _obstore.obs.list
    calls: list[str | None] = []

    def flaky(store: Any, prefix: Any = None, *, offset: Any = None, **options: Any) -> Any:
        calls.append(offset)
        stream = real_list(store, prefix, **options)  # the offset ignored, as Azurite does

        async def chunks() -> AsyncIterator[Any]:
            async for index, chunk in _enumerate(stream):
                if len(calls) == 1 and index == 1:
                    raise OSError("connection reset by peer")  # a transient failure
                yield chunk

        return chunks()

    monkeypatch.setattr(_obstore.obs, "list", flaky)
    name = f"repeats-{time.monotonic_ns()}"
    store = MemoryStore(name)

    async def fill_and_list() -> list[str]:
        await asyncio.gather(*(store.put(f"k{i:04d}", b"x") for i in range(2500)))
        return [entry[0] async for chunk in store.entries() for entry in chunk]

    try:
        keys = asyncio.run(fill_and_list())
    finally:
        MemoryStore.forget(name)
    assert len(calls) == 2  # failed once, resumed once
    assert calls[1] == "k0999"  # after the last key of the chunk it had
    assert keys == [f"k{i:04d}" for i in range(2500)]


async def _enumerate(stream: Any) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    async for item in stream:
        yield index, item
        index += 1


@pytest.mark.postgres
def test_a_large_first_scan_leaves_statistics_for_the_next(
    pg_catalog_url: str, tmp_path: Path
) -> None:
    """Planned on no statistics, each keyset page of a rescan sorted the rest of the tier:
    pages walk the (tier, key) index whatever the statistics, and a first scan that wrote
    a tenth of the tier or more analyzes the table at once."""
    catalog = Catalog.open(pg_catalog_url)
    tuples = "SELECT reltuples FROM pg_class WHERE oid = 'objects'::regclass"
    try:
        entries: list[Entry] = [(f"d{i % 7}/f{i:05d}", 1, f"e{i}", i, None) for i in range(1500)]
        catalog.write_listed("t", entries, T0)  # rows, and never analyzed
        with catalog.engine.connect() as conn:
            assert conn.exec_driver_sql(tuples).scalar_one() < 0
            conn.exec_driver_sql(KEY_ORDER)
            plan = "\n".join(
                row[0]
                for row in conn.exec_driver_sql(
                    "EXPLAIN SELECT key, size, etag, modified_at FROM objects "
                    "WHERE tier = 't' AND key > '' ORDER BY key LIMIT 400"
                )
            )
        assert "Index" in plan
        assert "Sort" not in plan  # the pages' setting makes the index the only way

        issued: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            issued.append(statement)

        event.listen(catalog.engine, "before_cursor_execute", seen)
        try:
            pages = list(catalog.listed_state("t", page=400))
        finally:
            event.remove(catalog.engine, "before_cursor_execute", seen)
        assert [len(page) for page in pages] == [400, 400, 400, 300]
        keys = [row[0] for page in pages for row in page]
        assert keys == sorted(keys, key=lambda k: k.encode())
        assert issued.count(KEY_ORDER) == len(pages)  # each page's transaction sets it

        with catalog.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM objects")
        fill(tmp_path / "tier", [key for key, *_ in entries])
        scan(catalog, LocalStore(tmp_path / "tier"))  # 1,500 new rows: a tenth and more
        with catalog.engine.connect() as conn:
            assert conn.exec_driver_sql(tuples).scalar_one() == 1500
        fill(tmp_path / "tier", [f"new/{i:03d}" for i in range(20)])
        again = scan(catalog, LocalStore(tmp_path / "tier"))  # 20 new rows: too few
        assert again.new == 20
        with catalog.engine.connect() as conn:
            assert conn.exec_driver_sql(tuples).scalar_one() == 1500  # not analyzed again
    finally:
        catalog.close()


class ListedStore(MemoryStore):
    """A store whose listing is given: entries in key order, in chunks of given sizes."""

    def __init__(self, name: str, entries: list[Entry], chunks: list[int]) -> None:
        super().__init__(name)
        self.listed = entries
        self.chunks = chunks

    async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        at = 0
        for size in self.chunks:
            if at < len(self.listed):
                yield self.listed[at : at + size]
                at += size
        if at < len(self.listed):
            yield self.listed[at:]


_KEYS = st.lists(st.sampled_from(TRAPS + [f"k{i:02d}" for i in range(30)]), unique=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=_KEYS,
    after=_KEYS,
    changed=st.sets(st.sampled_from(TRAPS + [f"k{i:02d}" for i in range(30)])),
    restamped=st.sets(st.sampled_from(TRAPS + [f"k{i:02d}" for i in range(30)])),
    chunks=st.lists(st.integers(1, 9), max_size=12),
    block=st.sampled_from([1, 2, 3, 5, 64]),
)
def test_a_rescan_writes_exactly_the_difference(
    catalog: Catalog,
    before: list[str],
    after: list[str],
    changed: set[str],
    restamped: set[str],
    chunks: list[int],
    block: int,
) -> None:
    """Blocks compared whole and entries compared one by one decide the same: after any
    listing, the inventory is that listing, and exactly the new, changed and vanished
    objects were counted (an object listed with its ETag and a new mtime is unchanged)."""
    import shelflife.engine.scan as scanning

    def entry(key: str, size: int, modified: int) -> Entry:
        return (key, size, f"etag-{key}-{size}", modified, modified)

    first = [entry(key, 1, 10) for key in sorted(before)]
    second = [
        entry(key, 2 if key in changed else 1, 20 if key in restamped else 10)
        for key in sorted(after)
    ]
    tier = f"t{time.monotonic_ns()}"
    saved = scanning.BLOCK
    scanning.BLOCK = block
    try:
        scan(catalog, ListedStore(f"l-{time.monotonic_ns()}", first, chunks), tier)
        result = scan(catalog, ListedStore(f"l-{time.monotonic_ns()}", second, chunks[::-1]), tier)
    finally:
        scanning.BLOCK = saved
    rows = [(row.key, row.size, row.etag) for row in catalog.iter_objects(tier)]
    assert sorted(rows, key=lambda row: row[0].encode()) == [entry[:3] for entry in second]
    assert result.new == len(set(after) - set(before))
    assert result.changed == len(set(after) & set(before) & changed)
    assert result.removed == len(set(before) - set(after))


def test_the_compiled_folder_read_gives_what_python_gives(tmp_path: Path) -> None:
    """The C reader of a folder and the Python one agree on every kind of entry."""
    from shelflife.stores import local

    try:
        from shelflife.stores._folder import read_folder
    except ImportError:
        if os.environ.get("CI"):
            raise  # the install of this machine kind builds it: its absence is a defect
        pytest.skip("shelflife.stores._folder is not built (no C compiler at install)")
    folder = tmp_path / "f"
    fill(folder, ["plain", "x#12", "a b", "é", "🎬", "tab\there", "sub/inner", "back\\slash"])
    (folder / "empty").write_bytes(b"")
    os.utime(folder / "plain", ns=(0, -1_500_000_001))  # before 1970: negative µs
    os.utime(folder / "a b", ns=(0, 7))  # ctime far after mtime: arrived is the ctime
    with open(folder / "sparse", "wb") as handle:
        handle.truncate(5 * 2**40)  # a size past 32 bits
    os.symlink(folder / "plain", folder / "file-link")
    os.symlink(folder / "sub", folder / "folder-link")
    os.mkfifo(folder / "fifo")
    (folder / "other").mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(os.open(b"not-utf8-\xff", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        compiled = read_folder(fd, "f/")
        python = local._read_folder_py(fd, "f/")
    finally:
        os.close(fd)
    files, folders, links = compiled
    assert (sorted(files), sorted(folders), links) == (
        sorted(python[0]),
        sorted(python[1]),
        python[2],
    )
    assert sorted(folders) == ["other", "sub"]
    assert links == 2
    named = {file[0].removeprefix("f/"): file for file in files}
    assert "fifo" not in named
    assert "not-utf8-\udcff" in named  # decoded as os.listdir decodes it
    assert named["plain"][3] == -1_500_001  # floor, as Python's // gives
    assert named["sparse"][1] == 5 * 2**40
    assert named["a b"][4] > named["a b"][3]


# -- the index of objects by age during a first load ------------------------------------


class WatchedStore(ListedStore):
    """A listed store that notes, before each chunk after the first, whether the catalog
    has its index of objects by age; it fails before chunk ``fail_at`` if given."""

    def __init__(self, catalog: Catalog, entries: list[Entry], fail_at: int | None = None):
        super().__init__(f"w-{time.monotonic_ns()}", entries, [10] * (len(entries) // 10))
        self.catalog = catalog
        self.fail_at = fail_at
        self.seen: list[bool] = []

    async def entries(self, prefix: str = "") -> AsyncIterator[list[Entry]]:
        number = 0
        async for chunk in super().entries(prefix):
            if number:
                await asyncio.sleep(0.01)  # let the batch before be written
                self.seen.append(has_age_index(self.catalog))
            if number == self.fail_at:
                raise OSError("the listing broke off")
            number += 1
            yield chunk


def has_age_index(catalog: Catalog) -> bool:
    from sqlalchemy import inspect

    with catalog.engine.connect() as conn:
        return bool(inspect(conn).has_index("objects", "ix_objects_tier_modified"))


def listed(n: int, start: int = 0) -> list[Entry]:
    return [
        (f"k{i:05d}", 1, f"e{i}", 1_700_000_000_000_000 + (i * 7919) % n, None)
        for i in range(start, start + n)
    ]


@pytest.fixture
def small_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from shelflife.engine import scan as scanning

    monkeypatch.setattr(scanning, "LOAD_ROWS", 30)
    monkeypatch.setattr(scanning, "WRITE_BATCH", 10)


def test_a_first_load_builds_the_age_index_at_the_end(catalog: Catalog, small_loads: None) -> None:
    store = WatchedStore(catalog, listed(200))
    result = scan(catalog, store, "t")
    assert result.new == 200
    assert has_age_index(catalog)
    # set aside while most rows were written, on SQLite only, and not before LOAD_ROWS
    assert (False in store.seen) == (catalog.dialect == "sqlite")
    assert store.seen[0]
    rows = sorted((row.key, row.modified_at) for row in catalog.iter_objects("t"))
    assert [key for key, _ in rows] == [entry[0] for entry in store.listed]


def test_a_scan_into_a_catalog_with_objects_keeps_the_index(
    catalog: Catalog, small_loads: None
) -> None:
    scan(catalog, ListedStore("first", listed(5), [5]), "other")
    store = WatchedStore(catalog, listed(200))
    assert scan(catalog, store, "t").new == 200
    assert store.seen
    assert all(store.seen)


def test_a_first_load_that_fails_builds_the_index_again(
    catalog: Catalog, small_loads: None
) -> None:
    store = WatchedStore(catalog, listed(200), fail_at=12)
    with pytest.raises(OSError, match="broke off"):
        scan(catalog, store, "t")
    assert (False in store.seen) == (catalog.dialect == "sqlite")
    assert has_age_index(catalog)


def test_an_index_left_aside_by_a_killed_scan_is_built_by_the_next(catalog: Catalog) -> None:
    scan(catalog, ListedStore("first", listed(50), [50]), "t")
    catalog.set_aside_age_index()  # what a first load killed with -9 leaves
    assert not has_age_index(catalog)
    scan(catalog, ListedStore("again", listed(50), [50]), "u")
    assert has_age_index(catalog)
