"""The HTTP API over HTTP, against a running ``shelflife serve`` (moto S3 for the cloud tier),
schemathesis against its OpenAPI schema, and the dashboard in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelflife.api.auth import hash_token, new_token
from tests.support.apps import AppTable
from tests.support.cli import SHELFLIFE
from tests.support.figures import Figures
from tests.support.servers import free_port, make_s3_bucket, s3_tier, wait_for_port

pytestmark = pytest.mark.s3
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("SHELFLIFE_ARTIFACTS", ROOT / ".artifacts"))
LIMIT = 4_000_000  # above the 1 MiB an upload may hold in memory, so streaming is tested


@dataclass
class Server:
    url: str
    base: Path
    app: AppTable
    tokens: dict[str, str]
    process: subprocess.Popen[bytes]

    def client(self, scope: str | None = "admin", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("api")
    app = AppTable(f"sqlite:///{base / 'app.db'}")
    tokens = {scope: new_token() for scope in ("read", "write", "admin")}
    bucket = make_s3_bucket(s3_endpoint)
    cloud = s3_tier(s3_endpoint, bucket, "cold")
    cloud_lines = "\n".join(f"{k} = {_toml(v)}" for k, v in cloud.items())
    token_lines = "\n".join(
        f'[[api.tokens]]\nname = "{scope}-token"\nhash = "{hash_token(token)}"\n'
        f'scopes = ["{scope}"]'
        for scope, token in tokens.items()
    )
    (base / "outputs").mkdir()
    (base / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[databases.app]
url = "{app.url}"
[tiers.local]
url = "file://outputs"
create = true
ref_format = "data/storage/outputs/{{key}}"
capacity = "10MB"
[tiers.cloud]
{cloud_lines}
[[references]]
database = "app"
table = "{app.name}"
column = "path"
[[rules]]
id = "orphans"
tier = "*"
action = "collect-orphans"
grace = "30d"
[api]
max_upload_size = "{LIMIT}B"
{token_lines}
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    (base / "tmp").mkdir()
    env["TMPDIR"] = str(base / "tmp")  # where a spooled upload would land (none may)
    process = subprocess.Popen(
        [SHELFLIFE, "serve", "--port", str(port)],
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_port(port, process, "shelflife serve")
    try:
        yield Server(f"http://127.0.0.1:{port}", base, app, tokens, process)
    finally:
        process.terminate()
        process.wait(20)


def _toml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower()


def upload(client: httpx.Client, key: str, data: bytes, **params: Any) -> httpx.Response:
    fields = {"key": key, **{k: v for k, v in params.items() if k == "tier"}}
    query = {k: v for k, v in params.items() if k != "tier"}
    return client.post(
        "/api/v1/objects", files={"file": ("f.bin", data)}, data=fields, params=query
    )


# -- public endpoints and auth ---------------------------------------------------------


def test_public_endpoints(server: Server) -> None:
    with server.client(None) as anonymous:
        assert anonymous.get("/healthz").json()["status"] == "ok"
        assert "shelflife_tier_bytes" in anonymous.get("/metrics").text
        assert anonymous.get("/metrics/storage").json()["status"] in ("healthy", "warning")
        schema = anonymous.get("/openapi.json").json()
        for path in ("/api/v1/objects", "/api/v1/urls/{key}", "/api/v1/runs/{run_id}"):
            assert path in schema["paths"]
        assert anonymous.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("GET", "/api/v1/stats/storage", "read"),
        ("GET", "/api/v1/plan", "read"),
        ("GET", "/api/v1/runs", "read"),
        ("GET", "/api/v1/urls/x.bin", "read"),
        ("GET", "/api/v1/objects/x.bin", "read"),
        ("POST", "/api/v1/objects", "write"),
        ("DELETE", "/api/v1/objects/x.bin", "write"),
        ("POST", "/api/v1/runs", "admin"),
    ],
)
def test_every_endpoint_checks_its_scope(
    server: Server, method: str, path: str, needs: str
) -> None:
    with server.client(None) as anonymous:
        missing = anonymous.request(method, path)
        assert missing.status_code == 401
        assert missing.json()["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        forged = anonymous.request(method, path, headers={"Authorization": "Bearer slf_nope"})
        assert forged.status_code == 401
        wrong_kind = anonymous.request(
            method, path, headers={"Authorization": f"Basic {server.tokens['admin']}"}
        )
        assert wrong_kind.status_code == 401
    ranks = ["read", "write", "admin"]
    for scope in ranks:
        with server.client(scope) as client:
            response = client.request(method, path)
            if ranks.index(scope) < ranks.index(needs):
                assert response.status_code == 403, (scope, response.text)
                assert response.json()["code"] == "forbidden"
            else:
                assert response.status_code not in (401, 403), (scope, response.text)


# -- objects -----------------------------------------------------------------------------


def test_upload_download_url_delete(server: Server) -> None:
    data = os.urandom(300_000)
    with server.client("write") as client:
        stored = upload(client, "api/one.bin", data)
        assert stored.status_code == 201, stored.text
        body = stored.json()
        assert body["key"] == "api/one.bin"
        assert body["tier"] == "local"
        assert body["size"] == body["bytes"] == len(data)
        assert body["checksum"].startswith("sha256:")
        assert body["ref"] == "data/storage/outputs/api/one.bin"
        fetched = client.get("/api/v1/objects/api/one.bin")
        assert fetched.status_code == 200
        assert fetched.content == data
        by_ref = client.get("/api/v1/objects/data/storage/outputs/api/one.bin")
        assert by_ref.content == data  # a row's value works as well as the key
        url = client.get("/api/v1/urls/api/one.bin").json()
        assert url["url"].startswith("file://")
        assert url["expires_at"] is None
        again = upload(client, "api/one.bin", b"other")
        assert again.status_code == 409
        assert again.json()["code"] == "exists"
        replaced = upload(client, "api/one.bin", b"other", overwrite="true")
        assert replaced.status_code == 201
        gone = client.delete("/api/v1/objects/api/one.bin")
        assert gone.status_code == 200
        assert gone.json() == {
            "key": "api/one.bin",
            "tier": "local",
            "tiers": ["local"],
            "deleted": True,
        }
        missing = client.get("/api/v1/objects/api/one.bin")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"


def test_a_delete_removes_every_copy_of_the_key(server: Server) -> None:
    """An older copy of the key on another tier must not come back after a delete."""
    with server.client("write") as client:
        assert upload(client, "api/twice.bin", b"old", tier="cloud").status_code == 201
        assert upload(client, "api/twice.bin", b"new", tier="local").status_code == 201
        assert client.get("/api/v1/objects/api/twice.bin").content == b"new"
        gone = client.delete("/api/v1/objects/api/twice.bin")
        assert gone.status_code == 200, gone.text
        assert sorted(gone.json()["tiers"]) == ["cloud", "local"]
        after = client.get("/api/v1/objects/api/twice.bin", follow_redirects=False)
        assert after.status_code == 404, after.text


def test_cloud_objects_redirect_to_a_presigned_url(server: Server) -> None:
    data = b"in the cloud" * 100
    with server.client("write") as client:
        assert upload(client, "api/cloud.bin", data, tier="cloud").status_code == 201
        redirect = client.get("/api/v1/objects/api/cloud.bin")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert "X-Amz-Signature" in location
        assert httpx.get(location).content == data
        url = client.get("/api/v1/urls/api/cloud.bin").json()
        assert "X-Amz-Expires=3600" in url["url"]
        assert url["expires_at"] is not None
        bad_tier = upload(client, "api/x.bin", b"x", tier="nowhere")
        assert bad_tier.status_code == 400


@pytest.mark.parametrize(
    "key",
    ["../escape.bin", "a/../../escape.bin", "/abs.bin", "nul\x00.bin", "a//b.bin", ""],
)
@pytest.mark.invariant("I7")
def test_hostile_keys_are_refused_on_upload(server: Server, key: str, figures: Figures) -> None:
    with server.client("write") as client:
        response = (
            upload(client, key, b"x")
            if key
            else client.post("/api/v1/objects", files={"file": ("", b"x")})
        )
        assert response.status_code in (400, 422), response.text
        assert response.json()["code"] in ("invalid_key", "bad_request", "invalid_request")
    assert not (server.base / "escape.bin").exists()
    assert not (server.base.parent / "escape.bin").exists()
    figures.add("security: path traversal", inputs=1, escaped=0)


@pytest.mark.parametrize(
    "path",
    ["%2e%2e/shelflife.toml", "a/%2e%2e/%2e%2e/shelflife.toml", "x%00.bin", "%2e%2e%2fapp.db"],
)
@pytest.mark.invariant("I7")
def test_hostile_keys_are_refused_on_read_and_delete(
    server: Server, path: str, figures: Figures
) -> None:
    with server.client("admin") as client:
        for method in ("GET", "DELETE"):
            response = client.request(method, f"/api/v1/objects/{path}?force=true")
            assert response.status_code == 400, (method, path, response.text)
            assert response.json()["code"] == "invalid_key"
        assert client.get(f"/api/v1/urls/{path}").status_code == 400
    assert (server.base / "shelflife.toml").exists()
    assert (server.base / "app.db").exists()
    figures.add("security: path traversal", inputs=3, escaped=0)


def test_oversized_uploads_are_refused(server: Server) -> None:
    big = b"z" * (LIMIT + 200_000)
    with server.client("write") as client:
        response = upload(client, "api/big.bin", big)
        assert response.status_code == 413
        assert response.json()["code"] == "too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            boundary = b"--xyz\r\n"
            yield boundary + b'Content-Disposition: form-data; name="key"\r\n\r\napi/big2.bin\r\n'
            yield boundary + b'Content-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
            for _ in range(50):
                yield b"z" * 100_000
            yield b"\r\n--xyz--\r\n"

        streamed = client.post(
            "/api/v1/objects",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert streamed.status_code == 413
        assert client.get("/api/v1/objects/api/big.bin").status_code == 404
        assert client.get("/api/v1/objects/api/big2.bin").status_code == 404
    assert not list((server.base / "outputs").rglob("big*"))


BOUNDARY = "t3stb0undary"


def field(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def file_head(filename: str = "f.bin", name: str = "file") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


def file_part(data: bytes, filename: str = "f.bin", name: str = "file") -> bytes:
    return file_head(filename, name) + data + b"\r\n"


CLOSING = f"--{BOUNDARY}--\r\n".encode()
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def post_raw(client: httpx.Client, body: bytes | Iterator[bytes], **params: Any) -> httpx.Response:
    return client.post("/api/v1/objects", content=body, headers=MULTIPART, params=params)


def staging_files(server: Server) -> list[Path]:
    return [path for path in (server.base / "outputs").rglob("*") if re.search(r"#\d+$", path.name)]


def test_an_upload_is_streamed_to_its_tier_as_it_arrives(server: Server) -> None:
    """The file's bytes reach the tier's staging file while the body is still arriving,
    and nothing is spooled anywhere else on the server's disk (its TMPDIR stays empty)."""
    seen_while_sending: list[list[Path]] = []
    piece = os.urandom(256 * 1024)

    def body() -> Iterator[bytes]:
        yield field("key", "stream/big.bin") + file_head()
        for _ in range(8):  # 2 MiB, then wait for the staging file to appear
            yield piece
        deadline = time.monotonic() + 30
        while not staging_files(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen_while_sending.append(staging_files(server))
        for _ in range(4):
            yield piece
        yield b"\r\n" + CLOSING

    with server.client("write") as client:
        stored = post_raw(client, body())
        assert stored.status_code == 201, stored.text
        assert stored.json()["size"] == 12 * len(piece)
        assert client.get("/api/v1/objects/stream/big.bin").content == piece * 12
    assert seen_while_sending[0], "no staging file on the tier while the body was arriving"
    assert seen_while_sending[0][0].name.startswith("big.bin#")
    assert not list((server.base / "tmp").iterdir())
    assert not staging_files(server)


def test_an_acknowledged_upload_is_in_the_catalog_and_leased(server: Server) -> None:
    with server.client("write") as client:
        assert upload(client, "api/acked.bin", b"acked").status_code == 201
    # read at once, behind the server's back: the answer waited for the commit
    with sqlite3.connect(server.base / "catalog.db") as conn:
        row = conn.execute(
            "SELECT size, checksum FROM objects WHERE tier = 'local' AND key = 'api/acked.bin'"
        ).fetchone()
        leases = conn.execute(
            "SELECT count(*) FROM leases WHERE tier = 'local' AND key = 'api/acked.bin'"
        ).fetchone()[0]
    assert row is not None
    assert row[0] == 5
    assert row[1].startswith("sha256:")
    assert leases == 1


def test_fields_may_follow_a_small_file(server: Server) -> None:
    with server.client("write") as client:
        after = post_raw(
            client, file_part(b"small", "name.bin") + field("key", "order/after.bin") + CLOSING
        )
        assert after.status_code == 201, after.text
        assert after.json()["key"] == "order/after.bin"
        cloud = post_raw(
            client,
            file_part(b"up", "n.bin") + field("key", "order/cloud.bin") + field("tier", "cloud"),
        )
        assert cloud.status_code == 400  # no closing boundary
        cloud = post_raw(
            client,
            file_part(b"up", "n.bin")
            + field("key", "order/cloud.bin")
            + field("tier", "cloud")
            + CLOSING,
        )
        assert cloud.status_code == 201, cloud.text
        assert cloud.json()["tier"] == "cloud"
        assert client.get("/api/v1/urls/order/cloud.bin").json()["tier"] == "cloud"


@pytest.mark.parametrize("tier", ["local", "cloud"])
def test_a_large_file_before_its_key_is_refused_and_leaves_nothing(
    server: Server, tier: str
) -> None:
    big = os.urandom(1024 * 1024 + 200_000)
    with server.client("write") as client:
        body = field("tier", tier) + file_part(big, "plain.bin") + field("key", f"late/{tier}.bin")
        refused = post_raw(client, body + CLOSING)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "bad_request"
        assert "'key' field came after" in refused.json()["message"]
        for key in (f"late/{tier}.bin", "plain.bin"):
            assert client.get(f"/api/v1/urls/{key}").status_code == 404
        # the same file with its key first is streamed and stored
        stored = post_raw(
            client,
            field("key", f"early/{tier}.bin") + field("tier", tier) + file_part(big) + CLOSING,
        )
        assert stored.status_code == 201, stored.text
        assert stored.json()["size"] == len(big)
    with server.client("read") as client:
        if tier == "local":
            assert client.get(f"/api/v1/objects/early/{tier}.bin").content == big
        else:
            location = client.get(f"/api/v1/objects/early/{tier}.bin").headers["location"]
            assert httpx.get(location).content == big
    assert not staging_files(server)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            field("key", "bad/1.bin") + file_part(b"x") + file_part(b"y") + CLOSING,
            400,
            "bad_request",
        ),
        (field("key", "bad/2.bin") + field("file", "not a file") + CLOSING, 422, "invalid_request"),
        (field("key", "bad/3.bin") + CLOSING, 422, "invalid_request"),
        (b"this is not multipart at all", 400, "bad_request"),
        (field("key", "bad/4.bin") + file_head() + b"cut short", 400, "bad_request"),
        (
            field("key", "bad/5.bin") + file_part(b"x", "").replace(b'name="file"', b"") + CLOSING,
            400,
            "bad_request",
        ),
    ],
    ids=["two-files", "file-as-field", "no-file", "garbage", "truncated", "nameless-part"],
)
@pytest.mark.invariant("I7")
def test_bad_multipart_is_refused_and_stores_nothing(
    server: Server, body: bytes, status: int, code: str
) -> None:
    with server.client("write") as client:
        response = post_raw(client, body)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        for n in range(1, 6):
            assert client.get(f"/api/v1/urls/bad/{n}.bin").status_code == 404
        not_multipart = client.post("/api/v1/objects", json={"key": "bad/6.bin"})
        assert not_multipart.status_code == 422
        assert not_multipart.json()["message"] == "body.file: Field required"
        no_boundary = client.post(
            "/api/v1/objects", content=body, headers={"Content-Type": "multipart/form-data"}
        )
        assert no_boundary.status_code == 400
        bad_flag = upload(client, "bad/7.bin", b"x", overwrite="maybe")
        assert bad_flag.status_code == 422
        assert bad_flag.json()["message"].startswith("query.overwrite:")
    assert not staging_files(server)


@pytest.mark.invariant("I7")
def test_a_client_gone_mid_body_leaves_nothing(server: Server) -> None:
    """A client that sends the start of a large upload and hangs up: no object under the
    key, no staging file left, and the server goes on serving."""
    import socket

    head = field("key", "gone/half.bin") + file_head()
    start = head + os.urandom(1024 * 1024 + 300_000)  # past the in-memory part: streaming
    request = (
        f"POST /api/v1/objects HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.tokens['write']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(start) + 1_000_000}\r\n\r\n"
    ).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request + start)
        deadline = time.monotonic() + 30
        while not staging_files(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert staging_files(server), "the write had not started"
    deadline = time.monotonic() + 30
    while staging_files(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not staging_files(server)
    assert not (server.base / "outputs" / "gone" / "half.bin").exists()
    with server.client("read") as client:
        assert client.get("/api/v1/urls/gone/half.bin").status_code == 404
        assert client.get("/healthz").status_code == 200


def test_concurrent_uploads_of_one_key(server: Server) -> None:
    payloads = [bytes([i]) * (50_000 + i) for i in range(8)]
    results: list[httpx.Response] = []

    def send(data: bytes) -> None:
        with server.client("write") as client:
            results.append(upload(client, "api/race.bin", data))

    threads = [threading.Thread(target=send, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(response.status_code for response in results)
    assert codes == [201] + [409] * 7
    winner = next(r for r in results if r.status_code == 201).json()
    with server.client("read") as client:
        stored = client.get("/api/v1/objects/api/race.bin").content
    assert stored in payloads
    assert len(stored) == winner["size"]


def test_the_api_holds_a_mixed_load(server: Server, figures: Figures) -> None:
    """16 clients at once, each uploading, reading back, resolving URLs and listing stats:
    every request answered, no 5xx, no connection error, every object its own bytes."""
    clients, rounds = 16, 12
    failures: list[str] = []
    answered = [0]
    lock = threading.Lock()

    def work(number: int) -> None:
        with server.client("write") as client:
            for round_ in range(rounds):
                key = f"load/{number:02}/{round_:02}.bin"
                data = f"{key}|".encode() * (50 + round_ * 40)
                try:
                    steps = [
                        upload(client, key, data),
                        client.get(f"/api/v1/objects/{key}"),
                        client.get(f"/api/v1/urls/{key}"),
                        client.get("/api/v1/stats/storage"),
                    ]
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{key}: {exc!r}")
                    continue
                with lock:
                    answered[0] += len(steps)
                codes = [r.status_code for r in steps]
                if codes != [201, 200, 200, 200] or steps[1].content != data:
                    with lock:
                        failures.append(f"{key}: {codes}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    assert answered[0] == clients * rounds * 4
    figures.add("HTTP API under concurrent load", clients=clients, requests=answered[0], errors=0)


@pytest.mark.invariant("I1")
def test_delete_is_refused_while_a_row_points_at_the_object(server: Server) -> None:
    with server.client("write") as client:
        assert upload(client, "api/kept.bin", b"kept").status_code == 201
        server.app.insert("data/storage/outputs/api/kept.bin")
        refused = client.delete("/api/v1/objects/api/kept.bin")
        assert refused.status_code == 409
        assert refused.json()["code"] == "referenced"
        assert server.app.name in refused.json()["message"]
        not_admin = client.delete("/api/v1/objects/api/kept.bin", params={"force": "true"})
        assert not_admin.status_code == 403
    with server.client("admin") as admin:
        forced = admin.delete("/api/v1/objects/api/kept.bin", params={"force": "true"})
        assert forced.status_code == 200
        assert admin.get("/api/v1/objects/api/kept.bin").status_code == 404


def test_reads_record_access_times_in_batches(server: Server) -> None:
    with server.client("write") as client:
        assert upload(client, "api/read-me.bin", b"r").status_code == 201
        for _ in range(5):
            assert client.get("/api/v1/objects/api/read-me.bin").status_code == 200
    catalog = server.base / "catalog.db"
    deadline = time.monotonic() + 20
    accessed = None
    while time.monotonic() < deadline and accessed is None:
        with sqlite3.connect(catalog) as conn:
            row = conn.execute(
                "SELECT last_accessed_at FROM objects WHERE key = 'api/read-me.bin'"
            ).fetchone()
        accessed = row[0] if row else None
        time.sleep(0.5)
    assert accessed is not None


# -- lifecycle endpoints -------------------------------------------------------------------


def test_stats_plan_and_runs(server: Server) -> None:
    with server.client("admin") as client:
        stats = client.get("/api/v1/stats/storage").json()
        assert set(stats["tiers"]) == {"local", "cloud"}
        assert stats["health"]["status"] in ("healthy", "warning", "critical")
        # scan first: run alone, no earlier test has scanned the tiers
        plan = client.get("/api/v1/plan", params={"scan": "true"}).json()
        assert {"now", "actions", "skipped", "totals"} <= set(plan), plan
        # the plan's cost, with each tier's prices: the table's for S3, none for a folder
        assert plan["cost"]["tiers"]["cloud"]["source"] == "table: s3:// STANDARD"
        assert plan["cost"]["tiers"]["cloud"]["gb_month"] == 0.023
        assert plan["cost"]["tiers"]["local"]["source"] == "file:// (free unless set)"
        assert {"one_off", "monthly_change", "payback_months"} <= set(plan["cost"]["total"])
        assert client.get("/api/v1/plan", params={"rule": "nope"}).status_code == 400
        started = client.post("/api/v1/runs", json={})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 60
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            record = client.get(f"/api/v1/runs/{run_id}").json()
            if record.get("status") not in (None, "running"):
                break
            time.sleep(0.3)
        assert record["status"] == "ok"
        assert record["trigger"] == "api"
        listed = client.get("/api/v1/runs").json()["runs"]
        assert run_id in [item["run_id"] for item in listed]
        assert client.get("/api/v1/runs/no-such-run").status_code == 404
        bad_rule = client.post("/api/v1/runs", json={"rule": "nope"})
        assert bad_rule.status_code == 400

        with sqlite3.connect(server.base / "catalog.db") as conn:  # a run elsewhere
            conn.execute(
                "INSERT INTO runs (id, command, trigger, started_at, status, dry_run, "
                "failed_count) VALUES ('run-other', 'run', 'cli', 0, 'running', 0, 0)"
            )
        try:
            busy = client.post("/api/v1/runs", json={})
            assert busy.status_code == 409
            assert busy.json()["code"] == "run_in_progress"
        finally:
            with sqlite3.connect(server.base / "catalog.db") as conn:
                conn.execute("DELETE FROM runs WHERE id = 'run-other'")


# -- schemathesis and the browser ------------------------------------------------------------


def test_schemathesis_finds_no_server_error(server: Server, figures: Figures) -> None:
    """Generated requests against every route of the OpenAPI schema: no 5xx."""
    st = shutil.which("schemathesis") or str(Path(SHELFLIFE).parent / "schemathesis")
    result = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {server.tokens['admin']}",
            "--max-examples",
            "15",
            "--phases",
            "examples,fuzzing",
            "--no-color",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=server.base,  # its caches stay out of the checkout
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout  # it did run cases
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", result.stdout))
    figures.add("HTTP API fuzzing (schemathesis)", generated_cases=cases, server_errors=0)


def test_dashboard_in_headless_chromium(server: Server) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are needed: scripts/test.sh installs them")
    with server.client("admin") as client:
        upload(client, "api/dash.bin", b"d" * 4000)
        started = client.post("/api/v1/runs", json={})  # 409 while one runs (schemathesis)
        run_id = started.json()["run_id"] if started.status_code == 202 else None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the page and the figures must show the same runs
            listed = client.get("/api/v1/runs", params={"limit": 10}).json()["runs"]
            finished = {item["run_id"] for item in listed if item["status"] != "running"}
            if len(finished) == len(listed) and (run_id is None or run_id in finished):
                break
            time.sleep(0.3)
        stats = client.get("/api/v1/stats/storage").json()
        runs = client.get("/api/v1/runs", params={"limit": 10}).json()["runs"]
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(server.url + "/")
        assert browser.title.startswith("shelflife")
        rows = browser.find_elements(By.CSS_SELECTOR, "#tiers tr[data-tier]")
        shown = {row.get_attribute("data-tier"): row for row in rows}
        assert set(shown) == {"local", "cloud"}
        for name, figures in stats["tiers"].items():
            row = shown[name]
            cells = row.find_elements(By.TAG_NAME, "td")
            assert cells[4].text == str(figures["objects"])
            assert int(row.get_attribute("data-bytes") or -1) == figures["bytes"]
        local = shown["local"]
        fill = local.find_element(By.CSS_SELECTOR, ".fill")
        expected = stats["tiers"]["local"]["usage_ratio"]
        assert float(fill.value_of_css_property("width").removesuffix("px")) == pytest.approx(
            240 * expected, abs=1.5
        )
        assert len(local.find_elements(By.CSS_SELECTOR, ".mark")) == 2  # both watermarks
        health = browser.find_element(By.ID, "health").text
        assert health == stats["health"]["status"]
        run_rows = browser.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")
        assert [r.get_attribute("data-run") for r in run_rows] == [r["run_id"] for r in runs]
        assert [r.get_attribute("data-status") for r in run_rows] == [r["status"] for r in runs]
        assert browser.find_element(By.ID, "plan").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()


def test_metrics_and_dashboard_can_require_a_token(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from shelflife import Shelf
    from shelflife.api import create_app
    from shelflife.config import parse_config

    token = new_token()
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "tiers": {"local": {"create": True, "url": f"file://{tmp_path / 'out'}"}},
        "api": {
            "public_metrics": False,
            "public_dashboard": False,
            "tokens": [{"name": "r", "hash": hash_token(token), "scopes": ["read"]}],
        },
    }
    shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="t", env={}))
    with TestClient(create_app(shelf)) as client:
        assert client.get("/healthz").status_code == 200  # always public
        for path in ("/metrics", "/metrics/storage", "/"):
            assert client.get(path).status_code == 401, path
            allowed = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200, path
