"""The upload path's parts: catalog writes committed in groups, token checks remembered
for a while (and revocation still taking effect), local writes whose new folders are as
durable as the file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelflife.api.auth import Tokens, hash_token, store_token
from shelflife.base.units import utcnow
from shelflife.catalog import Catalog
from shelflife.catalog.schema import api_tokens
from shelflife.config import parse_config
from shelflife.service.uploads import GroupCommit
from shelflife.stores import local as local_module
from shelflife.stores.base import PutResult
from shelflife.stores.local import LocalStore
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.servers import free_port, wait_for_port


def result(key: str, size: int = 3) -> PutResult:
    return PutResult(key, size, "sha256:" + "0" * 64, "etag")


def rows(catalog: Catalog) -> dict[str, int]:
    with catalog.engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT key, size FROM objects").all()
    return {str(key): int(size) for key, size in found}


def lease_keys(catalog: Catalog) -> list[str]:
    with catalog.engine.connect() as conn:
        return sorted(row[0] for row in conn.exec_driver_sql("SELECT key FROM leases"))


class GatedCatalog(Catalog):
    """A catalog whose first group waits for a gate: what arrives meanwhile queues up."""

    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog.engine)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.refuse: str | None = None  # a key whose row the database "rejects"

    def record_uploads(
        self,
        leases_taken: Sequence[tuple[str, str, datetime]],
        written: Sequence[tuple[str, str, int, str | None, str | None]],
        now: datetime,
    ) -> None:
        self.entered.set()
        self.gate.wait(30)
        if self.refuse is not None and any(key == self.refuse for _, key, *_ in written):
            raise RuntimeError("constraint violated")
        super().record_uploads(leases_taken, written, now)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = request.getfixturevalue("pg_catalog_url")
    opened = Catalog.open(url)
    yield opened
    opened.close()


def test_grouped_uploads_are_recorded_as_a_single_put_records_them(catalog: Catalog) -> None:
    """record_uploads (one transaction, statements compiled once) writes the rows
    record_puts writes, overwrites included, and the leases the ledger reads."""
    from shelflife.catalog.ledger import Ledger

    now = utcnow().replace(microsecond=123456)
    catalog.record_puts("local", [("single", 5, "sha256:a", "e1")], now)
    catalog.record_uploads(
        [("local", "grouped", now + timedelta(hours=1))],
        [("local", "grouped", 5, "sha256:a", "e1"), ("cloud", "other", 7, None, None)],
        now,
    )
    single, grouped = catalog.get("local", "single"), catalog.get("local", "grouped")
    assert single is not None
    assert grouped is not None
    same = ("size", "checksum", "etag", "modified_at", "created_at", "arrived_at", "state")
    assert {f: getattr(single, f) for f in same} == {f: getattr(grouped, f) for f in same}
    assert catalog.get("cloud", "other") is not None
    assert Ledger(catalog.engine).protected_keys("local", ["grouped", "single"], now) == {"grouped"}
    later = now + timedelta(minutes=1)
    catalog.record_uploads([], [("local", "grouped", 9, "sha256:b", "e2")], later)  # overwrite
    replaced = catalog.get("local", "grouped")
    assert replaced is not None
    assert (replaced.size, replaced.checksum, replaced.modified_at) == (9, "sha256:b", later)


def test_uploads_arriving_during_a_commit_share_the_next_one(catalog: Catalog) -> None:
    gated = GatedCatalog(catalog)
    group = GroupCommit(gated)
    later = utcnow() + timedelta(hours=1)

    async def main() -> None:
        first = asyncio.ensure_future(group.lease("local", "k/0", later))
        await asyncio.to_thread(gated.entered.wait, 30)  # the writer holds the first group
        rest = [asyncio.ensure_future(group.lease("local", f"k/{n}", later)) for n in range(1, 40)]
        rest += [asyncio.ensure_future(group.record("local", result(f"k/{n}"))) for n in range(40)]
        await asyncio.sleep(0.05)  # let every submission reach the queue
        gated.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), 60)

    asyncio.run(main())
    group.close()
    assert group.groups == 2  # the first item alone, the 79 that queued behind it together
    assert lease_keys(catalog) == sorted(f"k/{n}" for n in range(40))
    assert rows(catalog) == {f"k/{n}": 3 for n in range(40)}


def test_a_bad_item_fails_alone(catalog: Catalog) -> None:
    gated = GatedCatalog(catalog)
    gated.refuse = "bad"
    gated.gate.set()
    group = GroupCommit(gated)

    async def main() -> list[BaseException | None]:
        await asyncio.to_thread(lambda: None)
        tasks = [group.record("local", result(key)) for key in ("a", "bad", "b", "c")]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return [o if isinstance(o, BaseException) else None for o in outcomes]

    outcomes = asyncio.run(main())
    group.close()
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None,
        "RuntimeError",
        None,
        None,
    ]
    assert set(rows(catalog)) == {"a", "b", "c"}


def test_many_submitters_at_once_are_all_committed(catalog: Catalog) -> None:
    """Submissions from several threads and loops while the writer swaps its queues:
    every one is committed and answered (none lost between a swap and an append)."""
    group = GroupCommit(catalog)
    later = utcnow() + timedelta(hours=1)

    def submitter(number: int) -> None:
        async def main() -> None:
            for chunk in range(40):
                await asyncio.wait_for(
                    asyncio.gather(
                        *(group.lease("local", f"t{number}/{chunk}/{i}", later) for i in range(10))
                    ),
                    60,
                )

        asyncio.run(main())

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads trade the GIL as often as they can
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            for done in [pool.submit(submitter, n) for n in range(6)]:
                done.result(timeout=120)
    finally:
        sys.setswitchinterval(previous)
    group.close()
    assert len(lease_keys(catalog)) == 6 * 40 * 10


def test_a_row_is_written_even_if_its_waiter_gave_up(catalog: Catalog) -> None:
    gated = GatedCatalog(catalog)
    group = GroupCommit(gated)

    async def main() -> None:
        blocker = asyncio.ensure_future(group.record("local", result("first")))
        await asyncio.to_thread(gated.entered.wait, 30)
        waiting = asyncio.ensure_future(group.record("local", result("abandoned")))
        lease = asyncio.ensure_future(group.lease("local", "never", utcnow()))
        await asyncio.sleep(0.05)
        waiting.cancel()
        lease.cancel()
        await asyncio.gather(waiting, lease, return_exceptions=True)  # both given up
        gated.gate.set()
        await blocker

    asyncio.run(main())
    group.close()
    assert set(rows(catalog)) == {"first", "abandoned"}  # its object is in the store
    assert lease_keys(catalog) == []  # its upload never started


# -- reading the multipart body --------------------------------------------------------


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body: (name, value, filename or None) per part."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + b"--b0undary--\r\n"


async def read_body(body: bytes, chunk: int) -> tuple[dict[str, str], bytes]:
    """What the upload route reads from ``body`` delivered ``chunk`` bytes at a time."""
    from starlette.requests import Request

    from shelflife.api.uploads import UploadBody

    messages = [body[i : i + chunk] for i in range(0, len(body), chunk)]

    async def receive() -> dict[str, Any]:
        data = messages.pop(0)
        return {"type": "http.request", "body": data, "more_body": bool(messages)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/objects",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b0undary")],
    }
    upload = UploadBody(Request(scope, receive))
    await upload.read_head()
    if upload.whole is not None:
        return upload.fields, upload.whole
    return upload.fields, b"".join([piece async for piece in upload.stream()])


@pytest.mark.parametrize("chunk", [1024, 64 * 1024, 10**8], ids=["1KiB", "64KiB", "whole"])
def test_the_order_rule_depends_on_sizes_not_on_how_the_body_arrives(chunk: int) -> None:
    from shelflife.api.errors import ApiError
    from shelflife.api.uploads import WHOLE_BELOW

    small, large = b"s" * 1000, b"L" * (WHOLE_BELOW + 1)
    fields, data = asyncio.run(read_body(form(("file", small, "f"), ("key", b"k", None)), chunk))
    assert (fields, data) == ({"key": "k"}, small)  # fields may follow a small file
    fields, data = asyncio.run(read_body(form(("key", b"k", None), ("file", large, "f")), chunk))
    assert (fields, data) == ({"key": "k"}, large)
    with pytest.raises(ApiError) as refused:
        asyncio.run(read_body(form(("file", large, "f"), ("key", b"k", None)), chunk))
    assert refused.value.status == 400
    assert "'key' field came after" in refused.value.message
    fields, data = asyncio.run(read_body(form(("file", large, "f"), ("note", b"n", None)), chunk))
    assert (fields, data) == ({"note": "n"}, large)  # other fields may follow


def test_overwrite_is_read_as_fastapi_reads_a_boolean() -> None:
    from shelflife.api.errors import ApiError
    from shelflife.api.uploads import overwrite_flag

    assert overwrite_flag(b"") is False
    assert overwrite_flag(b"overwrite=true") is True
    assert overwrite_flag(b"overwrite=1&x=2") is True
    assert overwrite_flag(b"overwrite=on&overwrite=no") is False  # the last one counts
    assert overwrite_flag(b"other=true") is False
    with pytest.raises(ApiError) as bad:
        overwrite_flag(b"overwrite=maybe")
    assert bad.value.status == 422


# -- tokens --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_config(tmp_path: Path, **api: Any) -> Any:
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {"local": {"create": True, "url": f"file://{tmp_path / 'out'}"}},
        "api": api,
    }
    return parse_config(raw, base_dir=tmp_path, source="test", env={})


def test_an_accepted_token_is_remembered_for_the_ttl_only(tmp_path: Path, catalog: Catalog) -> None:
    config = token_config(tmp_path)
    assert config.api.token_cache_ttl == timedelta(seconds=5)  # the default
    clock = Clock()
    tokens = Tokens(config, catalog.engine, clock=clock)
    token = store_token(catalog.engine, "app", ["write"], utcnow())
    assert tokens.authenticate(token).name == "app"  # type: ignore[union-attr]
    with catalog.engine.begin() as conn:
        conn.execute(api_tokens.delete())  # revoked
    clock.now += 4.9
    assert tokens.remembered(token) is not None  # within the TTL: no catalog read
    assert tokens.authenticate(token) is not None
    clock.now += 0.2
    assert tokens.remembered(token) is None
    assert tokens.authenticate(token) is None  # past the TTL: refused


def test_a_refused_token_is_not_remembered(tmp_path: Path, catalog: Catalog) -> None:
    tokens = Tokens(token_config(tmp_path), catalog.engine, clock=Clock())
    token = "slf_" + "x" * 43
    assert tokens.authenticate(token) is None
    with catalog.engine.begin() as conn:  # the token is created after it was refused
        conn.execute(
            api_tokens.insert().values(
                name="late", hash=hash_token(token), scopes="read", created_at=utcnow()
            )
        )
    assert tokens.authenticate(token) is not None  # at once


def test_no_cache_with_a_zero_ttl(tmp_path: Path, catalog: Catalog) -> None:
    tokens = Tokens(token_config(tmp_path, token_cache_ttl="0s"), catalog.engine, clock=Clock())
    token = store_token(catalog.engine, "app", ["read"], utcnow())
    assert tokens.authenticate(token) is not None
    with catalog.engine.begin() as conn:
        conn.execute(api_tokens.delete())
    assert tokens.authenticate(token) is None


def test_a_revoked_token_is_refused_by_a_running_server_after_the_ttl(tmp_path: Path) -> None:
    """``shelflife token revoke`` against a server remembering tokens for 1 s: once a
    second has passed since the server last accepted the token, it refuses it."""
    (tmp_path / "outputs").mkdir()
    (tmp_path / "shelflife.toml").write_text("""
[catalog]
url = "sqlite:///catalog.db"
[tiers.local]
url = "file://outputs"
create = true
[api]
token_cache_ttl = "1s"
""")
    created = shelflife("token", "create", "app", "--scopes", "read", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    process = subprocess.Popen(
        [SHELFLIFE, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "shelflife serve")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            assert client.get("/api/v1/runs").status_code == 200
            accepted_at = time.monotonic()  # the server remembered it before answering
            revoked = shelflife("token", "revoke", "app", cwd=tmp_path)
            assert revoked.returncode == 0, revoked.stderr
            assert "refuses it within its [api] token_cache_ttl (1 s" in revoked.stderr
            time.sleep(max(0.0, accepted_at + 1.05 - time.monotonic()))
            refused = client.get("/api/v1/runs")
            assert refused.status_code == 401, refused.text
            assert refused.json()["code"] == "unauthorized"
    finally:
        process.terminate()
        process.wait(30)


# -- local writes ----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"small bytes", "stream"])
def test_the_folders_a_write_creates_are_synced_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes | str
) -> None:
    """A new object in new folders survives a crash only if each new folder's entry in its
    parent is on disk as well as the file's entry in its folder."""
    synced: list[Path] = []
    real = local_module._sync_folder
    monkeypatch.setattr(local_module, "_sync_folder", lambda p: (synced.append(p), real(p)))
    store = LocalStore(tmp_path / "tier")
    (tmp_path / "tier" / "a").mkdir()

    async def chunks() -> Any:
        yield b"streamed "
        yield b"bytes"

    source = payload if isinstance(payload, bytes) else chunks()
    written = asyncio.run(store.put("a/b/c/object.bin", source))
    assert (tmp_path / "tier" / "a" / "b" / "c" / "object.bin").read_bytes() in (
        b"small bytes",
        b"streamed bytes",
    )
    assert written.size in (11, 14)
    root = tmp_path / "tier"
    assert synced == [root / "a" / "b" / "c", root / "a" / "b", root / "a"]
    synced.clear()
    asyncio.run(store.put("a/b/c/second.bin", b"x"))
    assert synced == [root / "a" / "b" / "c"]  # no new folder: the file's folder only
