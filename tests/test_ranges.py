"""Byte ranges of the HTTP download route on a local tier: If-Range, a range worked out
from the file actually opened, and numbers too long to be positions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelflife import Shelf
from shelflife.api.auth import hash_token, new_token
from shelflife.api.objects import UNSATISFIABLE, byte_range
from shelflife.config import parse_config
from shelflife.stores.local import LocalStore

KEY = "r/x.bin"
OLD = bytes(range(256)) * 4  # 1,024 bytes
NEW = b"Z" * 1024  # the same size: only a validator tells the versions apart


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[httpx.AsyncClient, Shelf]]:
    from shelflife.api.app import create_app

    token = new_token()
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {
            "main": {"url": f"file://{tmp_path / 'main'}", "create": True, "ref_format": "m/{key}"}
        },
        "api": {"tokens": [{"name": "t", "hash": hash_token(token), "scopes": ["admin"]}]},
    }
    shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(shelf)),
        base_url="http://api",
        headers={"Authorization": f"Bearer {token}"},
    )
    shelf.put(OLD, KEY)
    yield client, shelf
    shelf.close()


def get(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    async def call() -> httpx.Response:
        return await client.get(f"/api/v1/objects/{KEY}", headers=headers)

    return asyncio.run(call())


def test_if_range_with_the_current_etag_sends_the_range(
    api: tuple[httpx.AsyncClient, Shelf],
) -> None:
    client, _ = api
    etag = get(client, {}).headers["etag"]
    part = get(client, {"Range": "bytes=1000-", "If-Range": etag})
    assert part.status_code == 206
    assert part.content == OLD[1000:]
    assert part.headers["content-range"] == "bytes 1000-1023/1024"


def test_if_range_with_a_stale_etag_sends_the_whole_new_object(
    api: tuple[httpx.AsyncClient, Shelf],
) -> None:
    """A resumed download whose first part came from an older version gets all of the new
    one: its tail spliced onto the old head would be neither version."""
    client, shelf = api
    old_etag = get(client, {}).headers["etag"]
    shelf.put(NEW, KEY)
    whole = get(client, {"Range": "bytes=1000-", "If-Range": old_etag})
    assert whole.status_code == 200
    assert whole.content == NEW
    assert "content-range" not in whole.headers
    assert whole.headers["etag"] != old_etag


def test_if_range_never_matches_a_weak_etag(api: tuple[httpx.AsyncClient, Shelf]) -> None:
    client, _ = api
    etag = get(client, {}).headers["etag"]
    whole = get(client, {"Range": "bytes=1000-", "If-Range": f"W/{etag}"})
    assert whole.status_code == 200
    assert whole.content == OLD


def test_if_range_with_a_date_compares_it_with_last_modified(
    api: tuple[httpx.AsyncClient, Shelf], tmp_path: Path
) -> None:
    client, _ = api
    path = tmp_path / "main" / KEY
    os.utime(path, (1_700_000_000.25, 1_700_000_000.25))
    last_modified = get(client, {}).headers["last-modified"]
    assert last_modified == "Tue, 14 Nov 2023 22:13:20 GMT"
    part = get(client, {"Range": "bytes=0-9", "If-Range": last_modified})
    assert part.status_code == 206
    assert part.content == OLD[:10]

    os.utime(path, (1_700_000_100, 1_700_000_100))  # modified after the client's copy
    whole = get(client, {"Range": "bytes=0-9", "If-Range": last_modified})
    assert whole.status_code == 200
    assert whole.content == OLD

    for validator in ("not a date", "Tue, 14 Nov 2023 22:15:00"):  # no zone: no match
        assert get(client, {"Range": "bytes=0-9", "If-Range": validator}).status_code == 200


def test_if_range_without_range_is_ignored(api: tuple[httpx.AsyncClient, Shelf]) -> None:
    client, _ = api
    whole = get(client, {"If-Range": '"other"'})
    assert whole.status_code == 200
    assert whole.content == OLD


def test_the_range_is_worked_out_from_the_file_opened(
    api: tuple[httpx.AsyncClient, Shelf], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer replaces the object while the request is served (here: as soon as
    the route has looked at it, through any store call). The answer describes, and sends,
    one version: the one opened."""
    client, _ = api
    real_head, real_open = LocalStore.head, LocalStore.open

    def overwrite(store: LocalStore, key: str) -> None:
        path = store.root / key
        staged = path.with_name("staged")
        staged.write_bytes(b"B" * 100)
        os.replace(staged, path)

    async def head(self: LocalStore, key: str) -> Any:
        info = await real_head(self, key)
        overwrite(self, key)
        return info

    async def open_(self: LocalStore, key: str, **kwargs: Any) -> Any:
        stream = await real_open(self, key, **kwargs)
        overwrite(self, key)
        return stream

    monkeypatch.setattr(LocalStore, "head", head)
    monkeypatch.setattr(LocalStore, "open", open_)
    part = get(client, {"Range": "bytes=1000-1023"})
    assert part.status_code == 206
    assert part.headers["content-range"] == "bytes 1000-1023/1024"
    assert part.headers["content-length"] == "24"
    assert part.content == OLD[1000:]


def test_unsatisfiable_is_judged_on_the_file_opened(
    api: tuple[httpx.AsyncClient, Shelf], tmp_path: Path
) -> None:
    client, shelf = api
    shelf.put(b"s" * 100, KEY)
    past = get(client, {"Range": "bytes=100-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == "bytes */100"


@pytest.mark.parametrize(
    "header",
    ["bytes=1" + "0" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000],
)
def test_a_position_of_thousands_of_digits_is_no_range(
    api: tuple[httpx.AsyncClient, Shelf], header: str
) -> None:
    client, _ = api
    whole = get(client, {"Range": header})
    assert whole.status_code == 200
    assert whole.content == OLD


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=" + "9" * 19 + "-", UNSATISFIABLE),  # 19 digits: a position, past the end
        ("bytes=0-" + "9" * 19, (0, 100)),
        ("bytes=-" + "9" * 19, (0, 100)),
        ("bytes=" + "9" * 20 + "-", None),  # 20 digits: not a position
        ("bytes=0-" + "9" * 20, None),
        ("bytes=-" + "1" * 20, None),
    ],
)
def test_positions_have_at_most_19_digits(header: str, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected
