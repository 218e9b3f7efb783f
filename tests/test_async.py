"""The async facade, AsyncShelf, over a ``file://`` tier and over the real S3 server (moto
over HTTP): every method, streaming a large object without holding it, many calls at once,
the same errors as the synchronous Shelf; and the HTTP API's object routes on top of it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import shelflife
from shelflife import AsyncShelf, Shelf
from shelflife.api.auth import hash_token, new_token
from shelflife.api.objects import UNSATISFIABLE, byte_range
from shelflife.config import Config, parse_config
from shelflife.errors import (
    InvalidKeyError,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    ShelflifeError,
    StoreTransient,
    UsageError,
)
from tests.support.servers import s3_tier

MiB = 1024 * 1024
HOSTILE = ["../etc/passwd", "/abs/path", "a/../../b", "nul\x00byte", "a//b", ""]


def make_config(tmp_path: Path, main: dict[str, Any], **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {
            "main": main,
            "other": {
                "url": f"file://{tmp_path / 'other'}",
                "create": True,
                "ref_format": "data/other/{key}",
            },
        },
        **extra,
    }
    return parse_config(raw, base_dir=tmp_path, source="test", env={})


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def config(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Config:
    if kind == "file":
        main: dict[str, Any] = {
            "url": f"file://{tmp_path / 'main'}",
            "create": True,
            "ref_format": "data/main/{key}",
            "public_url": "https://cdn.example/{key}",
        }
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        main = s3_tier(endpoint, bucket, "outputs")
    return make_config(tmp_path, main)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def row(shelf: AsyncShelf, tier: str, key: str) -> Any:
    return await asyncio.to_thread(shelf.shelf.catalog.get, tier, key)


def test_async_shelf_is_exported() -> None:
    assert shelflife.AsyncShelf is AsyncShelf
    assert "AsyncShelf" in shelflife.__all__


def test_put_get_url_delete(config: Config, kind: str) -> None:
    data = os.urandom(70_000)

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            stored = await shelf.put(data, "clips/a.bin")
            assert (stored.tier, stored.key, stored.size) == ("main", "clips/a.bin", len(data))
            assert stored.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
            recorded = await row(shelf, "main", "clips/a.bin")
            assert recorded is not None
            assert recorded.size == len(data)

            # a key or the value a row holds
            assert await shelf.get("clips/a.bin") == data
            assert await shelf.get(stored.ref) == data
            accessed = await row(shelf, "main", "clips/a.bin")
            assert accessed.last_accessed_at is not None

            url = await shelf.url(stored.ref)
            if kind == "file":
                assert url == "https://cdn.example/clips/a.bin"
            else:
                async with httpx.AsyncClient() as client:
                    fetched = await client.get(url)
                assert fetched.status_code == 200
                assert fetched.content == data

            gone = await shelf.delete(stored.ref)
            assert (gone.tier, gone.key) == ("main", "clips/a.bin")
            assert await row(shelf, "main", "clips/a.bin") is None
            with pytest.raises(ObjectNotFound):
                await shelf.get("clips/a.bin")
            assert not await shelf.store("main").exists("clips/a.bin")

    run(scenario())


def test_put_takes_files_streams_and_file_objects(
    config: Config, kind: str, tmp_path: Path
) -> None:
    source = tmp_path / "render.mp4"
    source.write_bytes(b"frames" * 5000)
    pieces = [os.urandom(300_000) for _ in range(4)]

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            from_path = await shelf.put(source)
            assert from_path.key == "render.mp4"
            assert await shelf.get("render.mp4") == source.read_bytes()

            streamed = await shelf.put(chunks(), "stream/s.bin", tags={"kind": "stream"})
            assert streamed.size == sum(map(len, pieces))
            assert await shelf.get("stream/s.bin") == b"".join(pieces)
            assert '"stream"' in (await row(shelf, "main", "stream/s.bin")).tags

            handle = io.BytesIO(b"from a file object")
            await shelf.put(handle, "f/o.bin", tier="other")
            assert await shelf.get("data/other/f/o.bin") == b"from a file object"

            with pytest.raises(ObjectExists):
                await shelf.put(b"different", "render.mp4", overwrite=False)
            assert await shelf.get("render.mp4") == source.read_bytes()

            with pytest.raises(UsageError, match="unknown tier"):
                await shelf.put(b"x", "x.bin", tier="nowhere")
            with pytest.raises(UsageError, match="is not a file"):
                await shelf.put(tmp_path / "missing.bin")
            with pytest.raises(UsageError, match="a key is needed"):
                await shelf.put(b"x")

    run(scenario())


def test_open_streams_a_large_object_in_chunks(config: Config, kind: str) -> None:
    size = 12 * MiB + 123
    data = os.urandom(size)
    chunk = 256 * 1024

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            await shelf.put(data, "big/video.bin")
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                async with shelf.open("big/video.bin", chunk_size=chunk) as stream:
                    assert stream.info.size == size
                    assert stream.length == size
                    first = await anext(aiter(stream))
                    # the first chunk is here while most of the object is not yet read
                    assert 0 < len(first) < size // 4
                    digest = hashlib.sha256(first)
                    received, count = len(first), 1
                    async for piece in stream:
                        digest.update(piece)
                        received += len(piece)
                        count += 1
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert received == size
            assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
            assert count >= size // (2 * MiB)  # many chunks, not one body
            assert peak < size // 3  # never the whole object in memory

            # a range of it
            middle = await shelf.open("big/video.bin", offset=5 * MiB + 7, length=100_000)
            assert (middle.offset, middle.length) == (5 * MiB + 7, 100_000)
            assert await middle.read() == data[5 * MiB + 7 : 5 * MiB + 7 + 100_000]
            tail = await shelf.open("big/video.bin", offset=size - 10)
            assert await tail.read() == data[-10:]

            # leaving a stream early releases it
            stream = await shelf.open("big/video.bin", chunk_size=chunk)
            await stream.aclose()

    run(scenario())


def test_a_local_stream_reads_the_file_as_it_goes(tmp_path: Path) -> None:
    """Bytes changed in place after the first chunk arrived are the ones that follow: the
    stream had not read them yet."""
    config = make_config(
        tmp_path,
        {"url": f"file://{tmp_path / 'main'}", "create": True, "ref_format": "m/{key}"},
    )
    size = 8 * MiB

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            await shelf.put(b"a" * size, "v.bin")
            path = tmp_path / "main" / "v.bin"
            async with shelf.open("v.bin", chunk_size=MiB) as stream:
                chunks = aiter(stream)
                assert await anext(chunks) == b"a" * MiB
                with path.open("r+b") as handle:  # same file, same inode
                    handle.seek(MiB)
                    handle.write(b"b" * (size - MiB))
                rest = b"".join([piece async for piece in chunks])
            assert rest == b"b" * (size - MiB)

    run(scenario())


def test_a_local_stream_cut_short_raises(tmp_path: Path) -> None:
    """A file shortened while it is read ends in an error, never in a stream that just
    stops: the reader would take the bytes so far for the whole object."""
    config = make_config(
        tmp_path,
        {"url": f"file://{tmp_path / 'main'}", "create": True, "ref_format": "m/{key}"},
    )
    size = 4 * MiB

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            await shelf.put(b"a" * size, "cut.bin")
            path = tmp_path / "main" / "cut.bin"
            async with shelf.open("cut.bin", chunk_size=MiB) as stream:
                assert stream.length == size
                chunks = aiter(stream)
                assert await anext(chunks) == b"a" * MiB
                os.truncate(path, MiB + 10)  # same file, rewritten in place
                with pytest.raises(StoreTransient, match="changed while being read") as raised:
                    async for _ in chunks:
                        pass
                assert "try again" in (raised.value.hint or "")

            # a range of it too
            await shelf.put(b"b" * size, "cut.bin")
            async with shelf.open("cut.bin", offset=MiB, length=2 * MiB) as part:
                os.truncate(path, 2 * MiB)
                with pytest.raises(StoreTransient):
                    await part.read()

    run(scenario())


def test_a_download_of_a_file_cut_short_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AsyncShelf.download of a local file truncated mid-read leaves no torn file."""
    from shelflife.service import aio

    config = make_config(
        tmp_path,
        {"url": f"file://{tmp_path / 'main'}", "create": True, "ref_format": "m/{key}"},
    )
    size = 20 * MiB
    source = tmp_path / "main" / "big.bin"
    real_write = aio._write_file

    async def write_then_truncate(stream: Any, target: Path) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            async for n, chunk in _numbered(stream):
                yield chunk
                if n == 0:  # another writer truncates the file after the first chunk
                    os.truncate(source, 1000)

        class Cut:
            info, offset, length = stream.info, stream.offset, stream.length

            def __aiter__(self) -> AsyncIterator[bytes]:
                return chunks()

        await real_write(Cut(), target)

    monkeypatch.setattr(aio, "_write_file", write_then_truncate)

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            await shelf.put(b"A" * size, "big.bin")
            out = tmp_path / "out"
            out.mkdir()
            with pytest.raises(StoreTransient):
                await shelf.download("big.bin", out / "big.bin")
            assert list(out.iterdir()) == []

    run(scenario())


async def _numbered(stream: Any) -> AsyncIterator[tuple[int, bytes]]:
    n = 0
    async for chunk in stream:
        yield n, chunk
        n += 1


def test_download_writes_the_file_whole(config: Config, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 5)

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            stored = await shelf.put(data, "d/frame.bin")
            target = tmp_path / "downloads"
            target.mkdir()
            written = await shelf.download(stored.ref, target)
            assert written == target / "frame.bin"
            assert written.read_bytes() == data
            assert [p.name for p in target.iterdir()] == ["frame.bin"]
            with pytest.raises(ObjectNotFound):
                await shelf.download("d/none.bin", target / "none.bin")
            assert not (target / "none.bin").exists()

    run(scenario())


def test_many_puts_and_gets_at_once(config: Config) -> None:
    payloads = {f"many/{n:03d}.bin": os.urandom(1000 + 97 * n) for n in range(60)}

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            stored = await asyncio.gather(*(shelf.put(data, key) for key, data in payloads.items()))
            assert {s.key for s in stored} == set(payloads)
            fetched = await asyncio.gather(*(shelf.get(key) for key in payloads))
            assert dict(zip(payloads, fetched, strict=True)) == payloads

            async def stream(key: str) -> bytes:
                async with shelf.open(key, chunk_size=4096) as opened:
                    return await opened.read()

            mixed = await asyncio.gather(
                *(stream(key) for key in payloads),
                *(shelf.url(key) for key in payloads),
                *(shelf.put(b"more" + data, "more/" + key) for key, data in payloads.items()),
            )
            assert mixed[: len(payloads)] == list(payloads.values())
            more = await asyncio.gather(*(shelf.get("more/" + key) for key in payloads))
            assert more == [b"more" + data for data in payloads.values()]
            for key in payloads:
                recorded = await row(shelf, "main", key)
                assert recorded is not None
                assert recorded.last_accessed_at is not None
            await asyncio.gather(*(shelf.delete(key) for key in payloads))
            for key in payloads:
                assert await row(shelf, "main", key) is None

    run(scenario())


def sync_error(config: Config, call: str, *args: Any) -> type[BaseException]:
    with Shelf.open(config) as shelf, pytest.raises(ShelflifeError) as caught:
        getattr(shelf, call)(*args)
    return caught.type


def test_errors_are_those_of_the_sync_shelf(config: Config) -> None:
    async def attempts(shelf: AsyncShelf, key: str) -> list[BaseException]:
        async def open_it() -> None:
            async with shelf.open(key):
                pass

        calls = [shelf.get(key), open_it(), shelf.url(key), shelf.delete(key)]
        calls.append(shelf.download(key, config.tiers["other"].url.removeprefix("file://")))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(result, BaseException) for result in results), results
        return [result for result in results if isinstance(result, BaseException)]

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            for failure in await attempts(shelf, "missing/none.bin"):
                assert type(failure) is sync_error(config, "get", "missing/none.bin")
                assert type(failure) is ObjectNotFound
                assert "no object" in str(failure)
                assert failure.hint
            for key in HOSTILE:
                for failure in await attempts(shelf, key):
                    assert isinstance(failure, InvalidKeyError), (key, failure)
                    assert type(failure) is sync_error(config, "url", key)
                with pytest.raises(InvalidKeyError):
                    await shelf.put(b"x", key)
            assert [info async for info in _listing(shelf)] == []

    run(scenario())


async def _listing(shelf: AsyncShelf) -> AsyncIterator[str]:
    async for chunk in shelf.store("main").list():
        for info in chunk:
            yield info.key


@pytest.mark.s3
def test_archived_objects_are_refused_as_by_the_sync_shelf(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    config = make_config(tmp_path, s3_tier(s3_endpoint, s3_bucket, storage_class="GLACIER"))

    async def scenario() -> None:
        async with AsyncShelf.open(config) as shelf:
            await shelf.put(b"cold bytes", "cold/a.bin")
            for call in (shelf.get("cold/a.bin"), shelf.url("cold/a.bin")):
                with pytest.raises(ObjectArchived, match="archive") as caught:
                    await call
                assert caught.value.hint
                assert "restore" in caught.value.hint
            with pytest.raises(ObjectArchived):
                await shelf.open("cold/a.bin")

    run(scenario())
    assert sync_error(config, "get", "cold/a.bin") is ObjectArchived
    assert sync_error(config, "url", "cold/a.bin") is ObjectArchived


def test_a_wrapped_shelf_stays_open(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        {"url": f"file://{tmp_path / 'main'}", "create": True, "ref_format": "m/{key}"},
    )
    with Shelf.open(config) as shelf:

        async def scenario() -> None:
            async with AsyncShelf(shelf) as wrapped:
                await wrapped.put(b"kept", "k.bin")
            opened = await AsyncShelf.open(config)
            assert await opened.get("m/k.bin") == b"kept"
            await opened.aclose()

        run(scenario())
        assert shelf.get("k.bin") == b"kept"  # the wrapped shelf works after the facade


# -- the HTTP API on the async facade -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-5", 100, (95, 100)),
        ("bytes=-500", 100, (0, 100)),
        ("bytes=50-5000", 100, (50, 100)),
        ("bytes=100-", 100, UNSATISFIABLE),
        ("bytes=-0", 100, UNSATISFIABLE),
        ("bytes=9-3", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
    ],
)
def test_byte_ranges(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


@pytest.fixture
def api(config: Config, tmp_path: Path) -> Iterator[tuple[httpx.AsyncClient, Shelf]]:
    from shelflife.api.app import create_app

    token = new_token()
    raw_api = {"tokens": [{"name": "t", "hash": hash_token(token), "scopes": ["admin"]}]}
    api_config = config.model_copy(update={"api": config.api.model_validate(raw_api)})
    shelf = Shelf.open(api_config)
    transport = httpx.ASGITransport(app=create_app(shelf))
    client = httpx.AsyncClient(
        transport=transport,
        base_url="http://api",
        headers={"Authorization": f"Bearer {token}"},
    )
    yield client, shelf
    shelf.close()


def test_http_routes_on_the_async_facade(api: tuple[httpx.AsyncClient, Shelf], kind: str) -> None:
    client, shelf = api
    data = os.urandom(2 * MiB + 11)

    async def scenario() -> None:
        async with client:
            files = {"file": ("v.bin", data)}
            created = await client.post("/api/v1/objects", data={"key": "h/v.bin"}, files=files)
            assert created.status_code == 201, created.text
            got = await client.get("/api/v1/objects/h/v.bin")
            if kind == "s3":
                assert got.status_code == 307
                assert got.headers["location"].startswith("http")
            else:
                assert got.status_code == 200
                assert got.content == data
                assert got.headers["content-length"] == str(len(data))
                assert got.headers["accept-ranges"] == "bytes"
                part = await client.get("/api/v1/objects/h/v.bin", headers={"Range": "bytes=5-9"})
                assert part.status_code == 206
                assert part.content == data[5:10]
                assert part.headers["content-range"] == f"bytes 5-9/{len(data)}"
                past = await client.get(
                    "/api/v1/objects/h/v.bin", headers={"Range": f"bytes={len(data)}-"}
                )
                assert past.status_code == 416
                assert past.headers["content-range"] == f"bytes */{len(data)}"
            url = (await client.get("/api/v1/urls/h/v.bin")).json()
            assert url["tier"] == "main"
            assert url["url"]
            assert (url["expires_at"] is None) == (kind == "file")
            deleted = await client.delete("/api/v1/objects/h/v.bin")
            assert deleted.json() == {
                "key": "h/v.bin",
                "tier": "main",
                "tiers": ["main"],
                "deleted": True,
            }
            missing = await client.get("/api/v1/objects/h/v.bin")
            assert missing.status_code == 404
            assert missing.json()["code"] == "not_found"
            hostile = await client.get("/api/v1/urls/a/../../b")
            assert hostile.status_code in (400, 404)

    run(scenario())
    assert shelf.catalog.get("main", "h/v.bin") is None
