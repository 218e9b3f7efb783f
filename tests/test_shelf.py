"""The Python API: Shelf over a local tier and a real S3 (moto) cloud tier."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelflife import Shelf
from shelflife.compat import StorageService
from shelflife.config import parse_config
from shelflife.errors import InvalidKeyError, ObjectNotFound, UsageError
from tests.support.servers import s3_tier


def make_shelf(tmp_path: Path, cloud: dict[str, Any] | None = None, **local: Any) -> Shelf:
    raw: dict[str, Any] = {
        "catalog": {"url": "sqlite:///catalog.db"},
        "tiers": {
            "local": {
                "url": "file://data/storage/outputs",
                "create": True,
                "ref_format": "data/storage/outputs/{key}",
                "ref_aliases": ["/workspace/outputs/{key}"],
                **local,
            },
            "cloud": cloud
            or {
                "create": True,
                "url": "file://data/storage/cold",
                "ref_format": "data/storage/cold/{key}",
            },
        },
    }
    return Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))


@pytest.fixture
def shelf(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Shelf]:
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    shelf = make_shelf(tmp_path, s3_tier(endpoint, bucket, "outputs"))
    yield shelf
    shelf.close()


def test_put_returns_the_row_value_and_records_the_object(shelf: Shelf, tmp_path: Path) -> None:
    source = tmp_path / "render.mp4"
    source.write_bytes(b"frames" * 1000)
    stored = shelf.put(source, key="outputs/render.mp4")
    assert stored.tier == "local"
    assert stored.ref == "data/storage/outputs/outputs/render.mp4"
    assert stored.checksum == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    row = shelf.catalog.get("local", "outputs/render.mp4")
    assert row is not None
    assert row.checksum == stored.checksum
    assert (
        tmp_path / "data/storage/outputs/outputs/render.mp4"
    ).read_bytes() == source.read_bytes()


def test_key_and_any_spelling_of_the_location_resolve(shelf: Shelf) -> None:
    shelf.put(b"payload", "a/b.bin")
    for ref in ["a/b.bin", "data/storage/outputs/a/b.bin", "/workspace/outputs/a/b.bin"]:
        assert shelf.get(ref) == b"payload"
        assert shelf.open(ref).read() == b"payload"
        assert shelf.url(ref).endswith("/data/storage/outputs/a/b.bin")


def test_a_row_value_keeps_working_after_the_object_moves_tiers(shelf: Shelf) -> None:
    shelf.put(b"moved bytes", "jobs/1.mp4", tier="cloud")
    # The row still says local, the object sits on the cloud tier today.
    url = shelf.url("data/storage/outputs/jobs/1.mp4")
    assert url.startswith("http://")
    assert "X-Amz-Signature" in url
    assert httpx.get(url).content == b"moved bytes"
    assert shelf.get("s3://" + url.split("/")[3] + "/outputs/jobs/1.mp4") == b"moved bytes"


def test_streams_and_files_are_written_and_read_back(shelf: Shelf, tmp_path: Path) -> None:
    shelf.put(io.BytesIO(b"x" * 3_000_000), "stream/obj", tier="cloud")
    target = shelf.download("stream/obj", tmp_path / "down" / "obj.bin")
    assert target.read_bytes() == b"x" * 3_000_000
    with shelf.open("stream/obj") as handle:
        assert handle.read() == b"x" * 3_000_000


def test_delete_and_not_found(shelf: Shelf) -> None:
    shelf.put(b"x", "gone/soon")
    assert shelf.delete("data/storage/outputs/gone/soon").tier == "local"
    assert shelf.catalog.get("local", "gone/soon") is None
    with pytest.raises(ObjectNotFound):
        shelf.get("gone/soon")
    with pytest.raises(ObjectNotFound):
        shelf.url("never/was")


def test_bad_input_changes_nothing(shelf: Shelf, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        shelf.put(b"x", "../outside")
    with pytest.raises(UsageError, match="unknown tier"):
        shelf.put(b"x", "k", tier="nowhere")
    with pytest.raises(UsageError, match="a key is needed"):
        shelf.put(b"x")
    with pytest.raises(UsageError, match="not a file"):
        shelf.put(tmp_path / "missing.bin")
    assert not (tmp_path / "outside").exists()
    assert list(shelf.ls()) == []


def test_scan_ls_and_stats(shelf: Shelf, tmp_path: Path) -> None:
    outputs = tmp_path / "data/storage/outputs/ext"
    outputs.mkdir(parents=True)
    for i in range(5):
        (outputs / f"f{i}").write_bytes(b"z" * 100)
    shelf.put(b"c" * 50, "c1", tier="cloud")
    results = {r.tier: r for r in shelf.scan()}
    assert (results["local"].objects, results["local"].bytes) == (5, 500)
    assert (results["cloud"].objects, results["cloud"].bytes) == (1, 50)
    assert sorted(info.key for _, info in shelf.ls("ext")) == [f"ext/f{i}" for i in range(5)]
    stats = shelf.stats()
    assert stats["tiers"]["local"]["objects"] == 5
    assert stats["tiers"]["local"]["bytes"] == 500
    assert stats["tiers"]["cloud"]["capacity"] is None
    assert stats["health"]["status"] in {"healthy", "warning", "critical"}


def test_usage_against_capacity_drives_health(tmp_path: Path) -> None:
    shelf = make_shelf(tmp_path, capacity="1000B")
    shelf.put(b"x" * 850, "big")
    stats = shelf.stats()
    assert stats["tiers"]["local"]["usage_ratio"] == pytest.approx(0.85)
    assert stats["health"]["status"] == "warning"
    shelf.put(b"x" * 100, "more")
    stats = shelf.stats()
    assert stats["health"]["status"] == "critical"
    assert "95%" in stats["health"]["reasons"][0]


def test_compat_storage_service(shelf: Shelf, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"clip")
    service = StorageService(shelf)
    local_ref = service.upload_file(source, "clip.mp4")
    cloud_ref = service.upload_to_cloud(source, "cloud/clip.mp4")
    assert local_ref == "data/storage/outputs/clip.mp4"
    assert cloud_ref.startswith("s3://")
    assert cloud_ref.endswith("/outputs/cloud/clip.mp4")
    assert service.get_file_url("clip.mp4").startswith("file://")
    assert httpx.get(service.get_file_url(cloud_ref)).content == b"clip"
