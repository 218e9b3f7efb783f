"""Request rate limits and throttling against moto's S3 server behind a rate-limited proxy.

The proxy (:class:`tests.support.faultproxy.FaultProxy` with ``limit=R``) refuses every
request beyond the R-th of each second with ``503 SlowDown`` and a ``Retry-After``, as S3
does past a prefix's rate, and records every arrival. A ``shelflife run`` migrating 120
objects to the S3 tier with ``max_requests_per_second`` below R is never refused; one with
no limit is refused, waits as asked, and still finishes; two processes sharing a catalog
stay under the rate together. Every check reads the stores and rows directly.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.apps import AppTable
from tests.support.cli import shelflife
from tests.support.faultproxy import FaultProxy
from tests.support.servers import make_s3_bucket, s3_client

pytestmark = [pytest.mark.s3, pytest.mark.timeout(600)]

# Six seconds of requests at RATE, two batches: what is proved is a rate held second after
# second (and throttling met and waited out), which more objects would only make longer.
OBJECTS = 120
LIMIT = 30  # requests the proxy answers per second
RATE = 20  # the tier's max_requests_per_second, below the proxy's limit


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(urlsplit(s3_endpoint).port or 0, limit=LIMIT, retry_after=1).start()
    yield proxy
    proxy.stop()


def write_world(
    tmp_path: Path, s3_endpoint: str, proxy: FaultProxy, cloud_extra: str
) -> tuple[Path, AppTable, str]:
    """OBJECTS small files on a local tier, each referenced by a row, a migrate rule to
    an S3 tier reached through ``proxy``; the config file, the app table and the bucket."""
    bucket = make_s3_bucket(s3_endpoint)
    outputs = tmp_path / "outputs"
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    for i in range(OBJECTS):
        key = f"r/{i:03d}.bin"
        (outputs / "r").mkdir(parents=True, exist_ok=True)
        (outputs / key).write_bytes(f"object {i} ".encode() * (10 + i % 50))
        app.insert(f"data/storage/outputs/{key}")
    config = tmp_path / "shelflife.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[databases.app]
url = "{app.url}"
[tiers.local]
url = "file://outputs"
ref_format = "data/storage/outputs/{{key}}"
[tiers.cloud]
url = "s3://{bucket}/pre"
endpoint = "http://127.0.0.1:{proxy.port}"
region = "us-east-1"
access_key = "testing"
secret_key = "testing"
ref_format = "s3://{bucket}/pre/{{key}}"
versioned = false
{cloud_extra}
[[references]]
database = "app"
table = "{app.name}"
column = "path"
[[rules]]
id = "to-cloud"
tier = "local"
action = "migrate"
to = "cloud"
after = "0s"
[executor]
concurrency = 8
batch_size = 60
""")
    return config, app, bucket


def check_everything_moved(
    tmp_path: Path,
    s3_endpoint: str,
    app: AppTable,
    bucket: str,
    result: subprocess.CompletedProcess[str],
) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "ok", outcome["failed"]
    assert len(outcome["actions"]) == OBJECTS
    listing = s3_client(s3_endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    stored = {item["Key"] for page in listing for item in page.get("Contents", [])}
    assert stored == {f"pre/r/{i:03d}.bin" for i in range(OBJECTS)}
    moved = sorted(f"s3://{bucket}/pre/r/{i:03d}.bin" for i in range(OBJECTS))
    assert sorted(app.values()) == moved
    assert not [path for path in (tmp_path / "outputs").rglob("*") if path.is_file()]


def busiest_second(arrivals: list[tuple[float, bytes, bool]]) -> int:
    return max(Counter(math.floor(at) for at, _, _ in arrivals).values())


def test_a_run_under_the_tiers_rate_is_never_throttled(
    tmp_path: Path, s3_endpoint: str, proxy: FaultProxy
) -> None:
    """max_requests_per_second = 20 behind a store answering 30 a second: every object
    moved and every row rewritten, no request refused, no second over 20 + 1 (as
    started: the documented bound) and a little jitter of arrival."""
    config, app, bucket = write_world(
        tmp_path, s3_endpoint, proxy, f"max_requests_per_second = {RATE}"
    )
    result = shelflife("--config", str(config), "run", "--json", "--yes", cwd=tmp_path)
    check_everything_moved(tmp_path, s3_endpoint, app, bucket, result)
    assert proxy.counts["slowdown"] == 0
    requests = [arrival for arrival in proxy.arrivals if not arrival[2]]
    assert len(requests) >= OBJECTS  # a PUT each, and the listings
    assert busiest_second(requests) <= RATE + 3
    # the requests are spread as the rate says: at least (n - 1) / rate from first to last
    span = requests[-1][0] - requests[0][0]
    assert span >= (len(requests) - 1) / RATE - 1.0


def test_a_run_without_a_limit_waits_as_the_store_asks_and_finishes(
    tmp_path: Path, s3_endpoint: str, proxy: FaultProxy
) -> None:
    """No limit: the store refuses part of the requests (SlowDown, Retry-After: 1); each
    refused request is tried again only after the delay, and the run finishes."""
    config, app, bucket = write_world(tmp_path, s3_endpoint, proxy, "retries = 6")
    result = shelflife("--config", str(config), "run", "--json", "--yes", cwd=tmp_path)
    check_everything_moved(tmp_path, s3_endpoint, app, bucket, result)
    refused = [(at, line) for at, line, was_refused in proxy.arrivals if was_refused]
    assert refused, "the store never throttled: the test proves nothing"
    for at, line in refused:
        retried = [later for later, again, _ in proxy.arrivals if again == line and later > at]
        assert retried, f"{line!r} was never tried again"
        assert min(retried) - at >= 1.0 - 0.05, (line, min(retried) - at)


HEADS = 20  # per process

SHARER = """
import sys, time, asyncio
from shelflife import Shelf
from shelflife.base.aio import run_sync
from shelflife.errors import ObjectNotFound

config, name, start, count = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
shelf = Shelf.open(config)
store = shelf.store("cloud")

async def head(i):
    try:
        await store.head(f"{name}/{i:03d}")
    except ObjectNotFound:
        pass

async def main():
    await asyncio.gather(*(head(i) for i in range(count)))

time.sleep(max(0.0, start - time.time()))
run_sync(main())
print(repr(store.limiter))
"""


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def test_two_processes_sharing_a_catalog_stay_under_the_rate_together(
    tmp_path: Path, s3_endpoint: str, kind: str, request: pytest.FixtureRequest
) -> None:
    """Two processes, one catalog (PostgreSQL; SQLite on one host), a tier limited to 10
    requests a second: 20 HEADs each, all at once; together they keep to 10 a second
    (each alone would have gone at 10): four seconds of sharing, second by second."""
    catalog_url = (
        request.getfixturevalue("pg_catalog_url")
        if kind == "postgresql"
        else f"sqlite:///{tmp_path / 'catalog.db'}"
    )
    proxy = FaultProxy(urlsplit(s3_endpoint).port or 0).start()
    try:
        bucket = make_s3_bucket(s3_endpoint)
        config = tmp_path / "shelflife.toml"
        config.write_text(f"""
[catalog]
url = "{catalog_url}"
[tiers.cloud]
url = "s3://{bucket}/pre"
endpoint = "http://127.0.0.1:{proxy.port}"
region = "us-east-1"
access_key = "testing"
secret_key = "testing"
max_requests_per_second = 10
""")
        script = tmp_path / "sharer.py"
        script.write_text(SHARER)
        from shelflife import Shelf

        Shelf.open(str(config)).close()  # the catalog migrated before both start
        start = time.time() + 4.0
        processes = [
            subprocess.Popen(
                [sys.executable, str(script), str(config), name, str(start), str(HEADS)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("a", "b")
        ]
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert "shared" in out
    finally:
        proxy.stop()
    heads = [(at, line) for at, line, _ in proxy.arrivals if line.startswith(b"HEAD")]
    by = Counter(b"/pre/a/" in line for _, line in heads)
    assert by == {True: HEADS, False: HEADS}
    assert busiest_second([(at, line, False) for at, line in heads]) <= 10 + 3
    span = heads[-1][0] - heads[0][0]
    assert span >= (2 * HEADS - 1) / 10 - 1.0  # at 10 a second, whoever sent them


def test_retry_after_is_honoured_where_the_client_shows_it(s3_endpoint: str) -> None:
    """A store refusing everything with ``Retry-After: 3``: the checksum HEAD (boto3,
    which shows the answer's headers) is tried again no sooner than 3 s later; obstore's
    requests cannot see the header and wait their own first step (1-1.25 s)."""
    from shelflife.base.aio import run_sync
    from shelflife.config.model import TierConfig
    from shelflife.errors import StoreThrottled
    from shelflife.stores.s3 import S3Store

    bucket = make_s3_bucket(s3_endpoint)
    proxy = FaultProxy(urlsplit(s3_endpoint).port or 0, limit=0, retry_after=3).start()
    try:
        tier = {
            "url": f"s3://{bucket}/pre",
            "endpoint": f"http://127.0.0.1:{proxy.port}",
            "region": "us-east-1",
            "access_key": "testing",
            "secret_key": "testing",
            "retries": 1,
        }
        store = S3Store(TierConfig.model_validate(tier))
        with pytest.raises(StoreThrottled) as caught:
            run_sync(store.stored_proofs("k"))
        assert caught.value.retry_after == 3.0
        boto = [at for at, _, _ in proxy.arrivals]
        proxy.arrivals.clear()
        with pytest.raises(StoreThrottled) as caught:
            run_sync(store.get_bytes("k"))  # a GET: the answer's body names SlowDown
        assert caught.value.retry_after is None
        plain = [at for at, _, _ in proxy.arrivals]
    finally:
        proxy.stop()
    assert len(boto) == 2  # one try and the tier's one retry, boto3 retrying nothing
    assert boto[1] - boto[0] >= 3.0 - 0.05
    assert len(plain) == 2  # obstore retries nothing itself either
    assert 1.0 - 0.05 <= plain[1] - plain[0] < 3.0


def _s3_store(bucket: str, port: int, retries: int) -> object:
    from shelflife.config.model import TierConfig
    from shelflife.stores.s3 import S3Store

    tier = {
        "url": f"s3://{bucket}/pre",
        "endpoint": f"http://127.0.0.1:{port}",
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
        "retries": retries,
    }
    return S3Store(TierConfig.model_validate(tier))


def test_a_create_only_upload_is_one_request_and_one_slot(s3_endpoint: str) -> None:
    """12 MiB from memory: with ``overwrite=False`` obstore sends one conditional PUT (it
    makes no multipart upload in create mode), which takes one slot; overwriting, it is a
    multipart upload whose create, parts and complete take one slot each."""
    from shelflife.base.aio import run_sync
    from shelflife.base.ratelimit import RateLimiter
    from shelflife.errors import ObjectExists

    class Counting(RateLimiter):
        taken = 0

        async def acquire(self) -> None:
            self.taken += 1

    bucket = make_s3_bucket(s3_endpoint)
    proxy = FaultProxy(urlsplit(s3_endpoint).port or 0).start()
    try:
        store: Any = _s3_store(bucket, proxy.port, retries=0)
        store.limiter = counting = Counting()
        data = b"m" * (12 * 1024 * 1024)
        run_sync(store.put("create-only", data, overwrite=False))
        created = [line for _, line, _ in proxy.arrivals]
        slots, counting.taken = counting.taken, 0
        proxy.arrivals.clear()
        with pytest.raises(ObjectExists):
            run_sync(store.put("create-only", data, overwrite=False))
        proxy.arrivals.clear()
        counting.taken = 0
        run_sync(store.put("overwritten", data))
        overwritten = [line for _, line, _ in proxy.arrivals]
        overwrite_slots = counting.taken
    finally:
        proxy.stop()
    # read back from the server itself: the proxy and a client with no retries are what
    # is measured above, not what should fail a 12 MiB read on a slow machine
    stored = s3_client(s3_endpoint).get_object(Bucket=bucket, Key="pre/create-only")
    assert stored["Body"].read() == data
    assert len(created) == 1
    assert created[0].startswith(b"PUT /")
    assert b"uploads" not in created[0]
    assert b"partNumber" not in created[0]
    assert slots == 1
    parts = math.ceil(len(data) / store.multipart_chunk_size)
    assert parts > 1
    assert len(overwritten) == parts + 2  # create, the parts, complete
    assert overwrite_slots == parts + 2


def test_a_throttled_listing_not_retried_still_holds_the_tier(s3_endpoint: str) -> None:
    from shelflife.base.aio import run_sync
    from shelflife.base.ratelimit import RateLimiter
    from shelflife.errors import StoreThrottled

    bucket = make_s3_bucket(s3_endpoint)
    proxy = FaultProxy(urlsplit(s3_endpoint).port or 0, limit=0).start()
    try:
        store: Any = _s3_store(bucket, proxy.port, retries=0)
        store.limiter = tier = RateLimiter()

        async def listing() -> None:
            async for _ in store.list(""):
                pass

        with pytest.raises(StoreThrottled):
            run_sync(listing())
    finally:
        proxy.stop()
    assert len(proxy.arrivals) == 1
    assert tier.throttles == 1
    assert tier.held_until > time.time()  # the tier's next requests wait
