"""Archive tiers (DESIGN I9): a copy to a storage class that cannot be read back at once
(S3 GLACIER on the S3 server, which refuses GetObject on it as S3 does) is verified by the
store's own checksum and size; a copy that fails verification, or that a killed run left
unverified, never stays behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.base.aio import run_sync
from shelflife.config.load import parse_config
from shelflife.errors import ObjectArchived, StoreError
from tests.support.apps import AppTable
from tests.support.cli import SHELFLIFE
from tests.support.figures import Figures
from tests.support.servers import (
    azure_tier,
    make_azure_container,
    make_s3_bucket,
    s3_client,
    s3_tier,
)

pytestmark = [pytest.mark.s3, pytest.mark.invariant("I9")]

SMALL = {f"logs/{i}.log": os.urandom(3000 + i) for i in range(3)}
LARGE = {"video/big.bin": os.urandom(12 * 1024 * 1024 + 17)}  # three 5 MiB parts


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppTable]:
    table = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    yield table
    table.dispose()


def glacier(endpoint: str, bucket: str) -> dict[str, Any]:
    return s3_tier(
        endpoint,
        bucket,
        storage_class="GLACIER",
        multipart_threshold="5MiB",
        multipart_chunk_size="5MiB",
    )


def raw_config(tmp_path: Path, app: AppTable, cold: dict[str, Any]) -> dict[str, Any]:
    hot = {"url": f"file://{tmp_path / 'hot'}", "ref_format": "hot/{key}", "create": True}
    return {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {"hot": hot, "cold": cold},
        "databases": {"app": {"url": app.url}},
        "references": [{"database": "app", "table": app.name, "column": "path"}],
        "rules": [
            {"id": "archive", "tier": "hot", "action": "migrate", "to": "cold", "after": "1d"}
        ],
    }


def archive_shelf(
    tmp_path: Path, app: AppTable, cold: dict[str, Any], executor: dict[str, Any] | None = None
) -> Shelf:
    raw = raw_config(tmp_path, app, cold)
    if executor:
        raw["executor"] = executor
    return Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))


def write_old(shelf: Shelf, objects: dict[str, bytes]) -> None:
    root = Path(shelf.store("hot").location.removeprefix("file://"))
    stamp = (datetime.now(UTC) - timedelta(days=10)).timestamp()
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (stamp, stamp))


def bucket_keys(endpoint: str, bucket: str) -> dict[str, str]:
    """Every object in the bucket, with its storage class."""

    client = s3_client(endpoint)
    found = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"].removeprefix("pre/"): item.get("StorageClass", "") for item in found}


def test_migration_to_glacier_verifies_without_reading(
    tmp_path: Path, app: AppTable, s3_endpoint: str, figures: Figures
) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    cold = glacier(s3_endpoint, bucket)
    shelf = archive_shelf(tmp_path, app, cold)
    objects = {**SMALL, **LARGE}
    write_old(shelf, objects)
    app.insert(*(f"hot/{key}" for key in objects))

    outcome = shelf.run()

    assert outcome.failed == []
    assert sorted(a.key for a in outcome.actions) == sorted(objects)
    assert bucket_keys(s3_endpoint, bucket) == dict.fromkeys(objects, "GLACIER")
    assert sorted(app.values()) == sorted(f"s3://{bucket}/pre/{key}" for key in objects)
    for key, data in objects.items():
        row = shelf.catalog.get("cold", key)
        assert row is not None
        assert row.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    # The S3 server refuses to read an archived object, as S3 does: say so, and how to
    # restore it, instead of a permissions error.
    ref = f"s3://{bucket}/pre/logs/0.log"
    with pytest.raises(ObjectArchived, match="is archived") as refused:
        shelf.get(ref)
    assert "restore-object" in (refused.value.hint or "")
    with pytest.raises(ObjectArchived):
        shelf.url(ref)
    figures.add("archive tiers (GLACIER)", verified_copies=len(objects), multipart=len(LARGE))


@pytest.mark.parametrize("fault", ["other-bytes", "error"])
def test_a_copy_that_fails_verification_is_deleted(
    tmp_path: Path, app: AppTable, s3_endpoint: str, fault: str, figures: Figures
) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    shelf = archive_shelf(tmp_path, app, glacier(s3_endpoint, bucket))
    write_old(shelf, SMALL)
    app.insert(*(f"hot/{key}" for key in SMALL))
    store = shelf.store("cold")

    async def lying(key: str) -> tuple[int, set[str]]:
        if fault == "error":
            raise StoreError("HEAD refused (fault injected)")
        return 3000, {"sha256:" + "A" * 43 + "="}

    store.stored_proofs = lying  # type: ignore[method-assign]

    outcome = shelf.run()

    assert sorted(f.key for f in outcome.failed) == sorted(SMALL)
    assert all("verif" in f.error for f in outcome.failed)
    assert bucket_keys(s3_endpoint, bucket) == {}  # no copy stays behind
    assert sorted(app.values()) == sorted(f"hot/{key}" for key in SMALL)
    assert {key: run_sync(shelf.store("hot").get_bytes(key)) for key in SMALL} == SMALL
    del store.stored_proofs  # the next run, with a store that answers, moves them
    assert sorted(a.key for a in shelf.run().actions) == sorted(SMALL)
    figures.add("archive tiers (GLACIER)", failed_verifications=len(SMALL), copies_left=0)


def test_a_sigkill_between_copy_and_verify_leaves_no_unverified_copy(
    tmp_path: Path, app: AppTable, s3_endpoint: str, figures: Figures
) -> None:
    import tomli_w

    bucket = make_s3_bucket(s3_endpoint)
    config = tmp_path / "shelflife.toml"
    config.write_text(tomli_w.dumps(raw_config(tmp_path, app, glacier(s3_endpoint, bucket))))
    with Shelf.open(config) as shelf:
        write_old(shelf, SMALL)
    app.insert(*(f"hot/{key}" for key in SMALL))
    environ = {**os.environ, "SHELFLIFE_KILL_AT": "copied-object:2"}
    killed = subprocess.run(
        [SHELFLIFE, "-c", str(config), "run"], env=environ, capture_output=True, timeout=120
    )
    assert killed.returncode == -9
    assert bucket_keys(s3_endpoint, bucket)  # copies made, none verified

    recovered = subprocess.run(
        [SHELFLIFE, "-c", str(config), "recover", "--json"], capture_output=True, timeout=120
    )
    assert recovered.returncode == 0, recovered.stderr

    with Shelf.open(config) as after:
        named = {value.removeprefix(f"s3://{bucket}/pre/") for value in app.values()}
        left = bucket_keys(s3_endpoint, bucket)
        # Each copy left in the bucket was verified by the store's checksum and became
        # the object its rows name; everything else is back where it was.
        assert set(left) <= named
        for key, data in SMALL.items():
            tier = "cold" if key in left else "hot"
            assert after.catalog.get(tier, key) is not None
            if tier == "hot":
                assert run_sync(after.store("hot").get_bytes(key)) == data
                assert f"hot/{key}" in app.values()
            else:
                size, _ = run_sync(after.store("cold").stored_proofs(key))
                assert size == len(data)
                assert after.catalog.get("hot", key) is None
    figures.add("archive tiers (GLACIER)", kills=1, unverified_copies_left=0)


@pytest.mark.azure
@pytest.mark.parametrize("memory", ["256MiB", "8MiB"])
def test_migration_to_azure_archive_verifies_by_content_md5(
    tmp_path: Path, app: AppTable, azure_endpoint: str, figures: Figures, memory: str
) -> None:
    container = make_azure_container(azure_endpoint)
    cold = {**azure_tier(azure_endpoint, container), "storage_class": "Archive"}
    cold["multipart_threshold"] = cold["multipart_chunk_size"] = "5MiB"
    shelf = archive_shelf(tmp_path, app, cold, {"transfer_memory": memory, "concurrency": 4})
    objects = {**SMALL, **LARGE}
    write_old(shelf, objects)
    app.insert(*(f"hot/{key}" for key in objects))

    outcome = shelf.run()

    store = shelf.store("cold")
    listed = run_sync(_keys(store))
    if memory == "256MiB":
        # 256 MiB shared by 4 transfers: the 12 MiB blob goes up in one request too.
        assert outcome.failed == []
        assert sorted(a.key for a in outcome.actions) == sorted(objects)
        assert sorted(listed) == sorted(objects)
    else:
        # Written in one request, a blob gets a Content-MD5 from Azure: verified by it.
        assert sorted(a.key for a in outcome.actions) == sorted(SMALL)
        # 8 MiB shared by 4: the 12 MiB blob goes up in blocks and gets none; nothing
        # vouches for the copy, so it is deleted and the object stays where it was, with
        # a message saying what to change.
        (failure,) = outcome.failed
        assert failure.key == "video/big.bin"
        assert "Content-MD5" in failure.error
        assert "multipart_threshold" in failure.error
        assert "transfer_memory" in failure.error
        assert sorted(listed) == sorted(SMALL)
        assert "hot/video/big.bin" in app.values()
    with pytest.raises(ObjectArchived, match="is archived") as refused:
        shelf.get(f"az://{container}/pre/logs/1.log")
    assert "set-tier" in (refused.value.hint or "")
    figures.add("archive tiers (GLACIER)", verified_copies=len(SMALL), copies_left=0)


async def _keys(store: Any) -> list[str]:
    return [info.key async for chunk in store.list() for info in chunk]
