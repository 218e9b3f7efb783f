"""``shelflife://`` through fsspec: pandas over a migration, fsspec's own abstract suites,
and the filesystem's behaviours on a ``file://`` tier and on the S3 tier (moto's server)."""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
import tomli_w
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from shelflife import Shelf
from shelflife.base.aio import run_sync
from shelflife.contrib.fsspec import ShelflifeFileSystem
from shelflife.errors import UsageError
from tests.support.apps import AppTable
from tests.support.servers import make_s3_bucket, s3_tier

BACKENDS = ["file", pytest.param("s3", marks=pytest.mark.s3)]


def write_config(
    folder: Path,
    request: pytest.FixtureRequest,
    *,
    app: AppTable | None = None,
    capacity: str = "1TB",
) -> Path:
    """A shelflife.toml with a ``local`` folder tier and a ``cloud`` tier on moto's S3
    server, migrating local → cloud above 80 % of ``capacity``."""
    endpoint = request.getfixturevalue("s3_endpoint")
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{folder / 'catalog.db'}"},
        "tiers": {
            "local": {
                "url": f"file://{folder / 'local'}",
                "create": True,
                "ref_format": "data/out/{key}",
                "capacity": capacity,
                "high_watermark": "80%",
                "low_watermark": "70%",
                # an object written here may move at once (tests: no hour's grace)
                "upload_lease": "0s",
            },
            "cloud": s3_tier(endpoint, make_s3_bucket(endpoint)),
        },
        "rules": [
            {
                "id": "spill",
                "tier": "local",
                "action": "migrate",
                "to": "cloud",
                "when": "over-watermark",
            }
        ],
    }
    if app is not None:
        raw["databases"] = {"app": {"url": app.url}}
        raw["references"] = [{"database": "app", "table": app.name, "column": "path"}]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shelflife.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def tier_of(backend: str) -> str:
    return "local" if backend == "file" else "cloud"


@pytest.fixture
def config_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    return write_config(tmp_path, request)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fs(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> Iterator[ShelflifeFileSystem]:
    """The filesystem of a fresh config, writing to the tier under test: the S3 tier
    after a folder tier, or a folder tier before another (no S3 server asked)."""
    config = write_config(tmp_path, request) if backend == "s3" else two_folder_tiers(tmp_path)
    filesystem = ShelflifeFileSystem(config, tier=tier_of(backend), skip_instance_cache=True)
    yield filesystem
    filesystem.shelf.close()


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": [f"region-{i % 7}" for i in range(60)],
            "quarter": ["Q1"] * 60,
            "revenue": [round(1000 + i * 13.25, 2) for i in range(60)],
        }
    )


# -- pandas ---------------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.invariant("I1")
def test_pandas_reads_a_csv_shelflife_moved_to_s3(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    config = write_config(tmp_path, request, app=app, capacity="1000B")
    expected = frame()
    data = expected.to_csv(index=False).encode()
    assert len(data) > 800  # over the local tier's high watermark: it must move
    with Shelf.open(config) as shelf:
        stored = shelf.put(data, key="reports/q1.csv")
        assert stored.tier == "local"
        app.insert(stored.ref)
        fs = ShelflifeFileSystem(config, skip_instance_cache=True)
        # Opened on the local tier before the run; read on after the object has moved.
        reading = fs.open("reports/q1.csv", block_size=64, cache_type="none")
        assert reading.read(10) == data[:10]

        outcome = shelf.enforce().as_json()
        assert [a["key"] for a in outcome["actions"]] == ["reports/q1.csv"]
        assert shelf.resolve("reports/q1.csv").tier == "cloud"
        assert not (tmp_path / "local" / "reports" / "q1.csv").exists()
        (row,) = app.values()
        assert row.startswith("s3://")
        assert row.endswith("/reports/q1.csv")

        assert reading.read() == data[10:]
        reading.close()
        options = {"config": str(config)}
        pd.testing.assert_frame_equal(
            pd.read_csv("shelflife://reports/q1.csv", storage_options=options), expected
        )
        # The row's own value names the same object.
        assert fs.cat_file(row) == data
        assert fs.info("reports/q1.csv")["tier"] == "cloud"
        fs.shelf.close()
    app.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pandas_writes_through_it(config_file: Path, backend: str) -> None:
    expected = frame()
    options = {"config": str(config_file), "tier": tier_of(backend)}
    expected.to_csv("shelflife://exports/2026/q1.csv", index=False, storage_options=options)
    with Shelf.open(config_file) as shelf:
        location = shelf.resolve("exports/2026/q1.csv")
        assert location.tier == tier_of(backend)
        assert shelf.catalog.get(location.tier, location.key) is not None  # inventoried
        assert shelf.get("exports/2026/q1.csv") == expected.to_csv(index=False).encode()
    pd.testing.assert_frame_equal(
        pd.read_csv("shelflife://exports/2026/q1.csv", storage_options=options), expected
    )


# -- the filesystem, on a file:// tier and on S3 ---------------------------------------------


def test_registered_by_entry_point(config_file: Path) -> None:
    assert fsspec.get_filesystem_class("shelflife") is ShelflifeFileSystem
    fs, path = fsspec.core.url_to_fs("shelflife://reports/q1.csv", config=str(config_file))
    assert isinstance(fs, ShelflifeFileSystem)
    assert path == "reports/q1.csv"
    assert ShelflifeFileSystem._strip_protocol("shelflife:///reports/q1.csv/") == "reports/q1.csv"


def test_config_from_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHELFLIFE_CONFIG", str(config_file))
    monkeypatch.chdir(tmp_path)
    fs = fsspec.filesystem("shelflife", skip_instance_cache=True)
    fs.pipe_file("env/x.txt", b"found by $SHELFLIFE_CONFIG")
    with Shelf.open(config_file) as shelf:
        assert shelf.get("env/x.txt") == b"found by $SHELFLIFE_CONFIG"


def test_an_unknown_tier_is_refused_at_once(config_file: Path) -> None:
    with pytest.raises(UsageError, match="unknown tier 'nope'"):
        ShelflifeFileSystem(config_file, tier="nope", skip_instance_cache=True)


def test_ls_info_and_derived_folders(fs: ShelflifeFileSystem, backend: str) -> None:
    fs.pipe({"r/a.csv": b"a", "r/sub/b.csv": b"bb", "r/sub/deep/c.csv": b"ccc", "z": b""})
    assert fs.ls("r", detail=False) == ["r/a.csv", "r/sub"]
    assert fs.ls("shelflife://r/sub/", detail=False) == ["r/sub/b.csv", "r/sub/deep"]
    assert fs.ls("", detail=False) == ["r", "z"]
    listed = {entry["name"]: entry for entry in fs.ls("r")}
    assert listed["r/sub"] == {"name": "r/sub", "size": 0, "type": "directory"}
    assert listed["r/a.csv"]["type"] == "file"
    assert listed["r/a.csv"]["size"] == 1
    assert listed["r/a.csv"]["tier"] == tier_of(backend)
    assert fs.ls("r/a.csv", detail=False) == ["r/a.csv"]  # a file's path lists the file
    info = fs.info("r/sub/b.csv")
    assert (info["type"], info["size"], info["tier"]) == ("file", 2, tier_of(backend))
    assert fs.info("r/sub/deep")["type"] == "directory"
    assert fs.isdir("r")
    assert fs.isfile("r/a.csv")
    assert not fs.isdir("r/a.csv")
    assert fs.exists("z")
    assert fs.size("z") == 0
    assert not fs.exists("r/su")  # a string prefix of a folder is no folder
    with pytest.raises(FileNotFoundError):
        fs.info("r/missing.csv")
    with pytest.raises(FileNotFoundError):
        fs.ls("nothing/here")
    assert fs.find("r") == ["r/a.csv", "r/sub/b.csv", "r/sub/deep/c.csv"]
    assert fs.find("r", maxdepth=2, withdirs=True) == [
        "r",
        "r/a.csv",
        "r/sub",
        "r/sub/b.csv",
        "r/sub/deep",
    ]
    assert sorted(fs.glob("r/**/*.csv")) == ["r/a.csv", "r/sub/b.csv", "r/sub/deep/c.csv"]
    assert fs.du("r") == 6


def test_isdir_says_what_info_says(fs: ShelflifeFileSystem, backend: str) -> None:
    """isdir answers from a listing where it can, and agrees with info everywhere: a
    folder, a file, an object written outside shelflife (no inventory row), a key that
    is both a file and a folder (on S3), nothing, and a path that cannot be a key."""
    fs.pipe({"d/f.txt": b"f", "d/sub/g.txt": b"g"})
    outside = "d/outside/raw.bin"
    run_sync(fs.shelf.store(fs.tier).put(outside, b"not inventoried"))
    assert fs.shelf.catalog.get(fs.tier, outside) is None
    cases = [
        ("", True),
        ("d", True),
        ("d/sub", True),
        ("d/outside", True),
        ("shelflife://d/sub/", True),
        ("d/f.txt", False),
        (outside, False),
        ("d/nothing", False),
        ("d/su", False),
        ("a//b", False),
    ]
    if backend == "s3":  # a folder of files cannot also be a file
        fs.pipe({"both": b"b", "both/inner": b"i"})
        cases.append(("both", False))  # info says file
    for path, expected in cases:
        assert fs.isdir(path) is expected, path
        try:
            said = fs.info(path)["type"] == "directory"
        except (FileNotFoundError, ValueError):
            said = False
        assert said is expected, path


def test_a_missing_path_asks_each_tier_once(
    fs: ShelflifeFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exists/info of a path nothing holds: one lookup of the object and one listing
    per tier (the path is not asked again as a reference value naming the same key),
    and isdir of it only the listings."""
    fs.pipe_file("kept/x.csv", b"x")
    asked: list[tuple[str, str]] = []
    for tier in fs.shelf.config.tiers:
        store = fs.shelf.store(tier)
        for method in ["head", "list"]:  # exists is a head
            monkeypatch.setattr(store, method, counted(asked, tier, method, getattr(store, method)))
    assert not fs.exists("kept/nothing.csv")
    tiers = list(fs.shelf.config.tiers)
    assert sorted(asked) == sorted(
        [(tier, "head") for tier in tiers] + [(tier, "list") for tier in tiers]
    )
    asked.clear()
    assert not fs.isdir("kept/nothing.csv")
    assert sorted(asked) == sorted((tier, "list") for tier in tiers)


def counted(asked: list[tuple[str, str]], tier: str, method: str, call: Any) -> Any:
    """``call`` (a store's coroutine or listing method), noting each call in ``asked``."""

    def counting(*args: Any, **kwargs: Any) -> Any:
        asked.append((tier, method))
        return call(*args, **kwargs)

    return counting


def test_reads_are_seekable_ranges(fs: ShelflifeFileSystem) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    fs.pipe_file("big/blob.bin", data)
    with fs.open("big/blob.bin", block_size=64 * 1024) as handle:
        assert handle.size == len(data)
        handle.seek(2 * 1024 * 1024)
        assert handle.read(100) == data[2 * 1024 * 1024 : 2 * 1024 * 1024 + 100]
        handle.seek(-50, 2)
        assert handle.read() == data[-50:]
        handle.seek(10)
        assert handle.read(5) == data[10:15]
        assert handle.tell() == 15
        assert handle.read(0) == b""
    assert fs.cat_file("big/blob.bin") == data
    assert fs.cat_file("big/blob.bin", start=100, end=200) == data[100:200]
    assert fs.cat_file("big/blob.bin", start=-10) == data[-10:]
    assert fs.cat_file("big/blob.bin", start=5, end=-5) == data[5:-5]
    assert fs.cat_file("big/blob.bin", start=len(data) + 10) == b""
    assert fs.cat_file("big/blob.bin", end=len(data) * 2) == data
    assert fs.head("big/blob.bin", 7) == data[:7]
    assert fs.tail("big/blob.bin", 7) == data[-7:]
    assert fs.cat_ranges(["big/blob.bin"] * 2, [0, 50], [3, 60]) == [data[:3], data[50:60]]


def test_writes_are_stored_on_close(fs: ShelflifeFileSystem, backend: str) -> None:
    part = os.urandom(1024 * 1024)
    with fs.open("up/large.bin", "wb", block_size=256 * 1024) as handle:
        for _ in range(10):  # 10 MiB: past the spool's memory limit, uploaded as a stream
            handle.write(part)
        assert not fs.exists("up/large.bin")  # nothing is stored before close
    assert fs.cat_file("up/large.bin") == part * 10
    assert fs.info("up/large.bin")["tier"] == tier_of(backend)
    with fs.open("up/text.txt", "w", encoding="utf-8") as text:
        text.write("grüße\n")
    assert fs.read_text("up/text.txt", encoding="utf-8") == "grüße\n"
    fs.touch("up/empty")
    assert fs.cat_file("up/empty") == b""
    with fs.open("up/text.txt", "wb") as handle:
        handle.write(b"replaced")
    assert fs.cat_file("up/text.txt") == b"replaced"
    with pytest.raises(FileExistsError):
        fs.open("up/text.txt", "xb")
    with pytest.raises(FileExistsError):
        fs.pipe_file("up/text.txt", b"again", mode="create")
    with pytest.raises(ValueError, match="not supported"):
        fs.open("up/text.txt", "ab")
    with fs.transaction:
        with fs.open("up/later.txt", "wb") as handle:
            handle.write(b"committed with the transaction")
        assert not fs.exists("up/later.txt")
    assert fs.cat_file("up/later.txt") == b"committed with the transaction"
    source = fs.shelf.config.base_dir / "local-file.bin"
    source.write_bytes(b"put from disk")
    fs.put_file(str(source), "up/put.bin")
    assert fs.cat_file("up/put.bin") == b"put from disk"
    with fs.shelf as shelf:
        location = shelf.resolve("up/large.bin")
        assert shelf.catalog.get(location.tier, location.key) is not None


def test_copy_remove_and_folders(fs: ShelflifeFileSystem, backend: str) -> None:
    fs.pipe_file("src/one.txt", b"one")
    fs.cp_file("src/one.txt", "dst/copy.txt")
    assert fs.cat_file("dst/copy.txt") == b"one"
    assert fs.info("dst/copy.txt")["tier"] == tier_of(backend)
    fs.mkdir("empty/folder")  # nothing to make: it exists once an object is in it
    fs.makedirs("empty/folder", exist_ok=True)
    assert not fs.exists("empty/folder")
    with pytest.raises(FileNotFoundError):
        fs.ls("empty/folder")
    with pytest.raises(OSError, match="holds objects"):
        fs.rmdir("src")
    fs.rm_file("dst/copy.txt")
    assert not fs.exists("dst/copy.txt")
    assert not fs.exists("dst")
    fs.rm_file("dst/copy.txt")  # already gone: not an error
    with pytest.raises(FileNotFoundError):
        fs.rm("dst/copy.txt")
    fs.pipe({"tree/a": b"a", "tree/b/c": b"c"})
    fs.rm("tree", recursive=True)
    assert not fs.exists("tree")
    assert fs.ls("", detail=False) == ["src"]
    fs.mv("src/one.txt", "moved/one.txt")
    assert fs.ls("", detail=False) == ["moved"]


def test_a_copy_of_an_object_gone_behind_shelflife_is_file_not_found(
    fs: ShelflifeFileSystem,
) -> None:
    """An inventory row whose object was deleted outside shelflife: cp_file of it is
    FileNotFoundError, and nothing is written."""
    fs.pipe_file("gone/x.bin", b"x")
    run_sync(fs.shelf.store(fs.tier).delete("gone/x.bin"))
    assert fs.shelf.catalog.get(fs.tier, "gone/x.bin") is not None
    with pytest.raises(FileNotFoundError, match=r"gone/x\.bin"):
        fs.cp_file("gone/x.bin", "copied/x.bin")
    assert not fs.exists("copied/x.bin")
    fs.pipe_file("gone/folder/y.bin", b"y")
    fs.cp_file("gone/folder", "copied/folder")  # a folder: copied by its objects, not here
    assert not fs.exists("copied/folder")


def test_errors_are_the_builtins_fsspec_users_catch(fs: ShelflifeFileSystem) -> None:
    fs.pipe_file("folder/file.txt", b"x")
    with pytest.raises(IsADirectoryError, match="folder of objects"):
        fs.open("folder")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("folder")
    with pytest.raises(FileNotFoundError, match=r"no object 'folder/nope\.txt'"):
        fs.open("folder/nope.txt")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("folder/nope.txt")
    for hostile in ["../etc/passwd", "a//b", "a/./b"]:
        with pytest.raises(ValueError, match="key"):
            fs.open(hostile, "wb")
        assert not fs.exists(hostile)
    assert not fs.exists("folder/nope.txt")


def test_reference_values_name_objects(fs: ShelflifeFileSystem, backend: str) -> None:
    stored = fs.shelf.put(b"by reference", key="refs/x.bin", tier=tier_of(backend))
    assert stored.ref != stored.key
    assert fs.cat_file(stored.ref) == b"by reference"
    assert fs.info(stored.ref)["name"] == "refs/x.bin"
    assert fs.info("refs/x.bin")["ref"] == stored.ref
    with fs.open(stored.ref, "wb") as handle:  # written where the value says
        handle.write(b"rewritten")
    assert fs.shelf.get("refs/x.bin") == b"rewritten"
    assert fs.shelf.resolve("refs/x.bin").tier == tier_of(backend)


@pytest.mark.s3
def test_an_object_is_replaced_where_it_lives(config_file: Path) -> None:
    fs = ShelflifeFileSystem(config_file, skip_instance_cache=True)  # new objects: local
    fs.shelf.put(b"old bytes", key="kept/x.bin", tier="cloud")
    fs.pipe_file("kept/x.bin", b"new bytes")
    assert fs.shelf.resolve("kept/x.bin").tier == "cloud"  # rows naming it keep working
    assert fs.cat_file("kept/x.bin") == b"new bytes"
    assert not fs.shelf.store("local").path("kept/x.bin").exists()
    fs.pipe_file("fresh/y.bin", b"y")
    assert fs.info("fresh/y.bin")["tier"] == "local"
    fs.shelf.close()


def test_import_without_fsspec_says_what_to_install() -> None:
    code = "import sys\nsys.modules['fsspec'] = None\nimport shelflife.contrib.fsspec\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "pip install 'shelflife[fsspec]'" in result.stderr


# -- fsspec's own abstract suites --------------------------------------------------------------

# Every case of fsspec's suites runs and passes, on both tiers. The one thing a key store
# cannot do, keep an empty folder, is the suites' own switch (supports_empty_directories =
# False): with it they check the object-store behaviour instead (a dummy object makes a
# target folder exist; an emptied folder is gone), so no case needs skipping.


@pytest.fixture(scope="module", params=BACKENDS)
def suite_fs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ShelflifeFileSystem]:
    folder = tmp_path_factory.mktemp(f"suite-{request.param}")
    # On the file:// tier the other tier is a folder too: the suites' many lookups of
    # paths nothing holds ask two folders, not moto's server (the S3 case asks both kinds).
    config = write_config(folder, request) if request.param == "s3" else two_folder_tiers(folder)
    filesystem = ShelflifeFileSystem(config, tier=tier_of(request.param), skip_instance_cache=True)
    yield filesystem
    filesystem.shelf.close()


class ShelflifeFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, suite_fs: ShelflifeFileSystem) -> ShelflifeFileSystem:
        return suite_fs

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return f"suite/{uuid.uuid4().hex[:10]}"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class TestCopy(ShelflifeFixtures, AbstractCopyTests):  # type: ignore[misc]
    pass


class TestGet(ShelflifeFixtures, AbstractGetTests):  # type: ignore[misc]
    pass


class TestPut(ShelflifeFixtures, AbstractPutTests):  # type: ignore[misc]
    pass


class TestOpen(ShelflifeFixtures, AbstractOpenTests):  # type: ignore[misc]
    pass


class TestPipe(ShelflifeFixtures, AbstractPipeTests):  # type: ignore[misc]
    pass


def two_folder_tiers(folder: Path, app: AppTable | None = None) -> Path:
    """``local`` and ``cold`` folder tiers whose spellings look like keys
    (``data/out/{key}``, ``cold/{key}``), with ``app``'s column declared when given."""
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{folder / 'catalog.db'}"},
        "tiers": {
            "local": {
                "url": f"file://{folder / 'local'}",
                "create": True,
                "ref_format": "data/out/{key}",
            },
            "cold": {
                "url": f"file://{folder / 'cold'}",
                "create": True,
                "ref_format": "cold/{key}",
            },
        },
    }
    if app is not None:
        raw["databases"] = {"app": {"url": app.url}}
        raw["references"] = [{"database": "app", "table": app.name, "column": "path"}]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shelflife.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def test_deletes_refuse_objects_rows_name(tmp_path: Path) -> None:
    """rm, rm_file and mv leave an object rows point at (PermissionError naming the rows,
    nothing deleted or copied), unless the filesystem is opened with force_delete."""
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    config = two_folder_tiers(tmp_path, app)
    fs = ShelflifeFileSystem(config, skip_instance_cache=True)
    for key in ["reports/a.csv", "reports/b.csv", "reports/free.csv", "m/keep.csv"]:
        fs.pipe_file(key, key.encode())
    app.insert("data/out/reports/a.csv", "cold/m/keep.csv")
    fs.shelf.recall("m/keep.csv", to="cold")  # the row spells the tier it is on now

    with pytest.raises(PermissionError, match=r"reports/a\.csv \(rows in app\.") as refused:
        fs.rm("reports", recursive=True)
    assert "force_delete=True" in str(refused.value)
    assert fs.find("reports") == ["reports/a.csv", "reports/b.csv", "reports/free.csv"]
    with pytest.raises(PermissionError, match=r"reports/a\.csv"):
        fs.rm_file("reports/a.csv")
    with pytest.raises(PermissionError, match=r"m/keep\.csv"):
        fs.mv("m/keep.csv", "n/keep.csv")
    assert not fs.exists("n/keep.csv")
    assert fs.cat_file("cold/m/keep.csv") == b"m/keep.csv"
    fs.rm_file("reports/free.csv")  # nothing names it
    assert not fs.exists("reports/free.csv")
    assert fs.shelf.audit().dangling == []

    forcing = ShelflifeFileSystem(config, skip_instance_cache=True, force_delete=True)
    forcing.rm("reports", recursive=True)
    assert not forcing.exists("reports")
    assert not any((tmp_path / "local" / "reports").glob("*.csv"))
    fs.shelf.close()
    forcing.shelf.close()
    app.dispose()


def test_shelflife_own_keys_are_not_listed_or_deleted(tmp_path: Path) -> None:
    """A quarantined object (``.shelflife-trash/``) is neither listed nor deleted, and
    the root cannot be removed."""
    fs = ShelflifeFileSystem(two_folder_tiers(tmp_path), skip_instance_cache=True)
    fs.pipe_file("junk/old.csv", b"old")
    trash = tmp_path / "local" / ".shelflife-trash"
    trash.mkdir()
    (trash / "q.csv").write_text("quarantined")
    fs.shelf.scan()

    assert fs.find("") == ["junk/old.csv"]
    assert fs.ls("", detail=False) == ["junk"]
    with pytest.raises(ValueError, match="root"):
        fs.rm("", recursive=True)
    with pytest.raises(ValueError, match="root"):
        fs.rm_file("shelflife://")
    with pytest.raises(PermissionError, match="shelflife's own"):
        fs.rm_file(".shelflife-trash/q.csv")
    assert (trash / "q.csv").read_text() == "quarantined"
    assert fs.cat_file("junk/old.csv") == b"old"
    fs.shelf.close()


def test_a_path_is_its_own_key_before_any_spelling(tmp_path: Path) -> None:
    """A key that looks like a tier's spelling (``data/out/x.csv``) is that key for reads,
    writes and deletes; the object ``x.csv`` the spelling would name is left alone."""
    fs = ShelflifeFileSystem(two_folder_tiers(tmp_path), skip_instance_cache=True)
    fs.shelf.put(b"literal", "data/out/x.csv", tier="cold")
    fs.shelf.put(b"other", "x.csv", tier="local")

    assert fs.cat_file("data/out/x.csv") == b"literal"
    assert fs.info("data/out/x.csv")["tier"] == "cold"
    fs.pipe_file("data/out/x.csv", b"rewritten")
    assert (tmp_path / "cold" / "data" / "out" / "x.csv").read_bytes() == b"rewritten"
    assert (tmp_path / "local" / "x.csv").read_bytes() == b"other"
    fs.rm_file("data/out/x.csv")
    assert not (tmp_path / "cold" / "data" / "out" / "x.csv").exists()
    assert (tmp_path / "local" / "x.csv").read_bytes() == b"other"
    # With no such key any more, the path is the local tier's spelling of x.csv.
    assert fs.cat_file("data/out/x.csv") == b"other"
    fs.shelf.close()
