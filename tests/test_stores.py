"""One backend suite, run against every store: memory, file, moto's S3 server, Azurite and
gcp-storage-emulator (through the XML gateway of tests/support/gcs_gateway.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from shelflife.config.model import TierConfig
from shelflife.errors import InvalidKeyError, ObjectExists, ObjectNotFound, StoreConfigError
from shelflife.stores import ObstoreStore, open_store
from shelflife.stores.transfer import transfer
from tests.support.servers import tier_config, write_gcs_service_account

T = TypeVar("T")
BACKENDS = [
    "memory",
    "file",
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("azure", marks=pytest.mark.azure),
    pytest.param("gcs", marks=pytest.mark.gcs),
]
HOSTILE_KEYS = [
    "../escape",
    "a/../../b",
    "/abs/path",
    "a//b",
    "a/./b",
    "trailing/",
    "back\\slash",
    "nul\0byte",
    "new\nline",
    "tab\there",
    "\x7fdel",
    "",
    "x" * 1025,
    "é" * 513,
    ".",
    "..",
]
FRIENDLY_KEYS = [
    "plain.txt",
    "deep/a/b/c/d/e/f/g.bin",
    "with space/file name.mp4",
    "ä/ö/ü.txt",
    "emoji/🎬.mp4",
    "UPPER/lower",
    "a-c",
    "a.b",
    "a/b",
    "percent%20literal",
    "plus+sign",
    "quote'and\"double",
    "/".join(["y" * 200] * 5) + "/" + "z" * 19,
]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@dataclass
class Backend:
    kind: str
    raw: dict[str, object]
    store: ObstoreStore


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    raw = tier_config(request.param, request, tmp_path / "src")
    return Backend(request.param, raw, open_store(TierConfig.model_validate(raw)))


@pytest.fixture
def store(backend: Backend) -> ObstoreStore:
    return backend.store


async def _all_keys(store: ObstoreStore, prefix: str = "") -> list[str]:
    return sorted([info.key async for chunk in store.list(prefix) for info in chunk])


async def _read(store: ObstoreStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])


def test_put_get_head_round_trip(store: ObstoreStore) -> None:
    data = os.urandom(100_000)
    result = run(store.put("dir/object.bin", data))
    assert result.size == len(data)
    assert result.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert run(_read(store, "dir/object.bin")) == data
    info = run(store.head("dir/object.bin"))
    assert info.key == "dir/object.bin"
    assert info.size == len(data)


@pytest.mark.parametrize("key", FRIENDLY_KEYS)
def test_unusual_but_valid_keys_round_trip(store: ObstoreStore, key: str) -> None:
    run(store.put(key, key.encode()))
    assert run(_read(store, key)) == key.encode()
    assert key in run(_all_keys(store))


def test_a_1024_byte_key_is_accepted_except_where_a_filesystem_cannot_hold_it(
    store: ObstoreStore,
) -> None:
    key = "x" * 1024
    if store.location.startswith("file://"):
        with pytest.raises(InvalidKeyError, match="255 bytes"):
            run(store.put(key, b"long"))
        assert run(_all_keys(store)) == []
        # Asked for, such a key is simply not there (not a filesystem error, HTTP 502).
        with pytest.raises(ObjectNotFound):
            run(store.head(key))
        with pytest.raises(ObjectNotFound):
            run(_read(store, key))
        run(store.delete(key))
        run(store.delete_many([key, "other"]))
        return
    run(store.put(key, b"long"))
    assert run(_read(store, key)) == b"long"


def test_a_key_ending_in_hash_digits_is_refused_only_by_file_tiers(store: ObstoreStore) -> None:
    if store.location.startswith("file://"):
        with pytest.raises(InvalidKeyError, match="reserves"):
            run(store.put("take#2", b"x"))
        assert run(_all_keys(store)) == []
        return
    run(store.put("take#2", b"x"))
    assert run(_all_keys(store)) == ["take#2"]


def test_virtual_hosted_style_puts_the_bucket_in_the_host() -> None:
    tier = TierConfig(
        url="s3://media/pre",
        endpoint="http://localhost:9000",
        access_key="a",
        secret_key="b",
        virtual_hosted_style=True,
    )
    url = run(open_store(tier).url("x/y.mp4"))
    assert url.startswith("http://media.localhost:9000/pre/x/y.mp4?")
    path_style = run(open_store(tier.model_copy(update={"virtual_hosted_style": False})).url("k"))
    assert path_style.startswith("http://localhost:9000/media/pre/k?")
    by_address = tier.model_copy(update={"endpoint": "http://127.0.0.1:9000"})
    with pytest.raises(StoreConfigError, match="needs a host name"):
        open_store(by_address)


def test_presigned_urls_expire_after_presign_ttl() -> None:
    tier = TierConfig(
        url="s3://b",
        endpoint="http://127.0.0.1:9",
        access_key="a",
        secret_key="b",
        presign_ttl="15m",
    )
    assert "X-Amz-Expires=900" in run(open_store(tier).url("k"))


@pytest.mark.invariant("I7")
def test_hostile_keys_are_rejected_and_nothing_is_written(store: ObstoreStore) -> None:
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidKeyError):
            run(store.put(key, b"x"))
        with pytest.raises(InvalidKeyError):
            run(store.head(key))
        with pytest.raises(InvalidKeyError):
            run(store.delete_many([key]))
    assert run(_all_keys(store)) == []


def test_missing_object_raises_object_not_found(store: ObstoreStore) -> None:
    with pytest.raises(ObjectNotFound):
        run(store.head("nope/missing"))
    with pytest.raises(ObjectNotFound):
        run(_read(store, "nope/missing"))
    assert isinstance(ObjectNotFound("x"), FileNotFoundError)


def test_create_only_put_never_overwrites(store: ObstoreStore) -> None:
    run(store.put("once", b"first"))
    with pytest.raises(ObjectExists):
        run(store.put("once", b"second", overwrite=False))
    assert run(_read(store, "once")) == b"first"


def test_listing_streams_five_thousand_keys_with_prefix(store: ObstoreStore) -> None:
    async def fill() -> None:
        semaphore = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with semaphore:
                await store.put(f"many/{i:05d}", b"")

        await asyncio.gather(*(one(i) for i in range(5000)))
        await store.put("other/x", b"")

    run(fill())
    keys = run(_all_keys(store, "many"))
    assert len(keys) == 5000
    assert keys[0] == "many/00000"
    assert keys[-1] == "many/04999"
    assert run(_all_keys(store, "other")) == ["other/x"]


def test_bulk_delete_is_idempotent(store: ObstoreStore) -> None:
    for i in range(20):
        run(store.put(f"del/{i}", b"x"))
    run(store.put("keep/me", b"x"))
    batch = [f"del/{i}" for i in range(20)] + ["del/never-existed"]
    run(store.delete_many(batch))
    run(store.delete_many(batch))
    assert run(_all_keys(store)) == ["keep/me"]


def test_copy_within_store(store: ObstoreStore) -> None:
    run(store.put("src/a", b"payload"))
    run(store.copy("src/a", "dst/a"))
    assert run(_read(store, "dst/a")) == b"payload"
    assert run(_read(store, "src/a")) == b"payload"
    with pytest.raises(ObjectExists):
        run(store.copy("src/a", "dst/a", overwrite=False))


def test_url_returns_the_bytes(store: ObstoreStore) -> None:
    key = "urls/ä b 🎬.bin"
    data = os.urandom(2048)
    run(store.put(key, data))
    url = run(store.url(key))
    if url.startswith("memory://"):
        pytest.skip("memory:// objects have no fetchable URL")
    if url.startswith("file://"):
        with urllib.request.urlopen(url) as response:
            assert response.read() == data
        return
    response = httpx.get(url)
    assert response.status_code == 200, response.text[:300]
    assert response.content == data


@pytest.mark.parametrize("target", ["memory", "file", "s3", "azure", "gcs"])
def test_transfer_between_stores_streams_large_objects(
    store: ObstoreStore, target: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dst = open_store(TierConfig.model_validate(tier_config(target, request, tmp_path / "dst")))
    data = os.urandom(12 * 1024 * 1024)  # above the 8 MiB multipart threshold
    run(store.put("big/one", data))
    run(store.put("small/one", b"tiny"))
    result = run(transfer(store, "big/one", dst, "moved/one"))
    assert result.size == len(data)
    assert result.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert run(_read(dst, "moved/one")) == data
    assert run(_read(store, "big/one")) == data
    small = run(transfer(store, "small/one", dst))
    assert small.size == 4
    assert run(_read(dst, "small/one")) == b"tiny"


LARGE_PROGRAM = r"""
import asyncio, hashlib, os, sys, threading, time
import psutil
from shelflife.config.model import TierConfig
from shelflife.stores import open_store
tier = TierConfig.model_validate_json(sys.argv[1])
source, sink = sys.argv[2], sys.argv[3]
store = open_store(tier)
proc = psutil.Process()
peak = [0]
running = [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.005)
async def main():
    from pathlib import Path
    await store.put("warmup", b"x")
    base = proc.memory_info().rss
    thread = threading.Thread(target=sample); thread.start()
    result = await store.put("large/object", Path(source))
    digest = hashlib.sha256()
    with open(sink, "wb") as out:
        async for chunk in store.get("large/object"):
            digest.update(chunk); out.write(chunk)
    running[0] = False; thread.join()
    print(result.size, result.checksum, "sha256:" + digest.hexdigest(), peak[0] - base)
asyncio.run(main())
"""


def test_large_object_streams_with_bounded_memory(backend: Backend, tmp_path: Path) -> None:
    if backend.kind == "memory":
        pytest.skip("a memory store holds the object in memory by design")
    size = 96 * 1024 * 1024
    source = tmp_path / "large.bin"
    digest = hashlib.sha256()
    with source.open("wb") as handle:
        for _ in range(size // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            handle.write(block)
    expected = "sha256:" + digest.hexdigest()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            LARGE_PROGRAM,
            json.dumps(backend.raw),
            str(source),
            str(tmp_path / "back.bin"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.split()
    written, put_checksum, read_checksum, growth = int(out[0]), out[1], out[2], int(out[3])
    assert written == size
    assert put_checksum == expected
    assert read_checksum == expected
    # Streaming keeps a few 8 MiB parts in flight; holding the object would need 96 MiB.
    assert growth < 64 * 1024 * 1024, f"memory grew by {growth / 2**20:.0f} MiB"


def test_gcs_tier_opens_and_signs_v4_urls_with_a_service_account(tmp_path: Path) -> None:
    credentials = tmp_path / "account.json"
    write_gcs_service_account(credentials)
    tier = TierConfig(url="gs://media/pre", credentials_file=str(credentials), presign_ttl="10m")
    url = run(open_store(tier).url("a b/ä.mp4"))
    assert url.startswith("https://storage.googleapis.com/media/pre/a%20b/%C3%A4.mp4?")
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in url
    assert "X-Goog-Expires=600" in url


def test_a_local_tier_explains_keys_that_collide_with_folders(tmp_path: Path) -> None:
    store = open_store(TierConfig(url=f"file://{tmp_path / 'tier'}", create=True))
    run(store.put("a/b", b"file"))
    with pytest.raises(InvalidKeyError, match="needs a folder where this local tier has a file"):
        run(store.put("a/b/c", b"x"))
    with pytest.raises(InvalidKeyError, match="names a folder"):
        run(store.put("a", b"x"))
    with pytest.raises(ObjectExists):
        run(store.put("a/b", b"other", overwrite=False))
    assert run(_read(store, "a/b")) == b"file"
    assert run(_all_keys(store)) == ["a/b"]


def test_a_refusal_reported_as_a_generic_error_is_an_auth_error() -> None:
    from obstore.exceptions import GenericError

    from shelflife.errors import StoreAuthError, StoreError, StoreTransient
    from shelflife.stores._obstore import translate_error

    refused = translate_error(
        GenericError(
            "Error performing GET http://x/b/k - Server returned non-2xx status code: "
            "403 Forbidden: <Error><Code>AccessDenied</Code></Error>"
        ),
        "s3://b",
    )
    assert isinstance(refused, StoreAuthError)
    assert refused.hint
    busy = translate_error(GenericError("Server returned non-2xx status code: 503"), "s3://b")
    assert isinstance(busy, StoreTransient)
    other = translate_error(GenericError("Server returned non-2xx status code: 400"), "s3://b")
    assert type(other) is StoreError
