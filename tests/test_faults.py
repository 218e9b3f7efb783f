"""Store faults: migrations, expirations and collections through a fault-injecting proxy.

moto's S3 server and Azurite sit behind :class:`tests.faultproxy.FaultProxy`, which drops
connections (before and after the server acted), answers 500/503, delays and cuts bodies
short for half of all requests. Each kind of work runs three times under faults, then
once with the faults gone. After every run, read straight from the servers (not through
the proxy): no object is lost, no row dangles, every run that failed anything ended
``partial`` with each failure listed, and the clean run finishes the work.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.storage.blob import ContainerClient

from shelflife import Shelf
from shelflife.base.units import utcnow
from shelflife.config import parse_config
from shelflife.errors import StoreTransient
from tests.support.apps import AppTable
from tests.support.faultproxy import FaultProxy
from tests.support.figures import Figures
from tests.support.servers import (
    AZURE_ACCOUNT,
    AZURE_KEY,
    azure_tier,
    make_azure_container,
    make_s3_bucket,
    s3_client,
    s3_tier,
)

pytestmark = [pytest.mark.s3, pytest.mark.azure, pytest.mark.timeout(600)]

FAULT_RATE = 0.5
FAULTY_RUNS = 3
MIGRATED, EXPIRED, ORPHANS = 100, 150, 60


def content(key: str) -> bytes:
    """The bytes of ``key``: 1-60 KiB, distinct per key."""
    size = 1024 * (1 + sum(key.encode()) % 60)
    return (key.encode() + b"|") * (size // (len(key) + 1) + 1)


def behind(endpoint: str, proxy: FaultProxy) -> str:
    parts = urlsplit(endpoint)
    return parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()


@pytest.fixture
def proxies(s3_endpoint: str, azure_endpoint: str) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    s3 = FaultProxy(urlsplit(s3_endpoint).port or 0, seed=11).start()
    azure = FaultProxy(urlsplit(azure_endpoint).port or 0, seed=12).start()
    yield s3, azure
    s3.stop()
    azure.stop()


class World:
    """Two object-store tiers behind fault proxies, an application table, and direct
    (proxy-free) views of both stores to check what is really there."""

    def __init__(self, tmp_path: Path, s3_endpoint: str, azure_endpoint: str, proxies: Any) -> None:
        self.s3_proxy, self.azure_proxy = proxies
        self.bucket = make_s3_bucket(s3_endpoint)
        self.container = make_azure_container(azure_endpoint)
        self.app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
        cloud = s3_tier(behind(s3_endpoint, self.s3_proxy), self.bucket, retries=2)
        archive = {**azure_tier(behind(azure_endpoint, self.azure_proxy), self.container)}
        archive["retries"] = 2
        orphan = {"action": "collect-orphans", "grace": "0s", "max_fraction": 1.0}
        raw: dict[str, Any] = {
            "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
            "tiers": {"cloud": cloud, "archive": archive},
            "databases": {"app": {"url": self.app.url}},
            "references": [
                {"database": "app", "table": self.app.name, "column": "path", "on_expire": "null"}
            ],
            "executor": {"batch_size": 20, "concurrency": 8, "max_error_fraction": 1.0},
            "rules": [
                {"id": "migrate", "tier": "cloud", "action": "migrate", "to": "archive",
                 "after": "0s", "filter": {"prefix": "m/"}},
                {"id": "expire", "tier": "cloud", "action": "expire", "after": "0s",
                 "filter": {"prefix": "e/"}},
                {"id": "collect-cloud", "tier": "cloud", "mode": "quarantine",
                 "filter": {"prefix": "o/"}, **orphan},
                {"id": "collect-archive", "tier": "archive", "mode": "delete",
                 "filter": {"prefix": "o/"}, **orphan},
            ],
        }  # fmt: skip
        self.shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))
        self.s3 = s3_client(s3_endpoint)
        self.azure = ContainerClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
            f"BlobEndpoint={azure_endpoint};",
            self.container,
        )

    def populate(self) -> None:
        for i in range(MIGRATED):
            self.put("cloud", f"m/{i:03}", referenced=True)
        for i in range(EXPIRED):
            self.put("cloud", f"e/{i:03}", referenced=True)
        for i in range(ORPHANS):
            self.put("cloud", f"o/{i:03}", referenced=False)
            self.put("archive", f"o/{i + 100:03}", referenced=False)
        self.shelf.ledger.purge_expired_leases(utcnow().replace(year=utcnow().year + 1))

    def put(self, tier: str, key: str, *, referenced: bool) -> None:
        stored = self.shelf.put(content(key), key, tier=tier)
        if referenced:
            self.app.insert(stored.ref)

    def faults(self, rate: float) -> None:
        self.s3_proxy.rate = self.azure_proxy.rate = rate

    @property
    def injected(self) -> int:
        return self.s3_proxy.injected + self.azure_proxy.injected

    # -- what is really in the stores ------------------------------------------------------

    def objects(self) -> dict[str, bytes]:
        """Every object of both tiers, by row spelling, read without the proxy."""
        found = {}
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="pre/")
        for item in listing.get("Contents", []):
            body = self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
            found[f"s3://{self.bucket}/{item['Key']}"] = body
        for blob in self.azure.list_blobs(name_starts_with="pre/"):
            body = self.azure.download_blob(blob.name).readall()
            found[f"az://{self.container}/{blob.name}"] = body
        return found

    def check(self) -> dict[str, int]:
        """I1: every row names an object holding its original bytes; nothing unreferenced
        that was not expired or collected is gone (quarantined objects sit in the trash)."""
        objects = self.objects()
        rows = self.app.values()
        dangling = [row for row in rows if row != "None" and objects.get(row) is None]
        wrong = [
            row
            for row in rows
            if row in objects and objects[row] != content(row.split("/pre/", 1)[1])
        ]
        assert not dangling, f"rows naming no object: {dangling[:5]}"
        assert not wrong, f"rows naming the wrong bytes: {wrong[:5]}"
        held = {value.split("/pre/", 1)[1]: body for value, body in objects.items()}
        trash = {key for key in held if key.startswith(".shelflife-trash/")}
        for i in range(MIGRATED):
            key = f"m/{i:03}"
            assert held.get(key) == content(key), f"{key} lost"
        for i in range(ORPHANS):  # quarantine keeps a copy; the archive's rule deletes
            key = f"o/{i:03}"
            in_trash = any(name.endswith("/" + key) for name in trash)
            assert held.get(key) == content(key) or in_trash, f"{key} lost, not quarantined"
        return {"rows": len(rows), "objects": len(objects)}


@pytest.mark.invariant("I1", "I2", "I3")
def test_lifecycle_under_store_faults(
    tmp_path: Path,
    s3_endpoint: str,
    azure_endpoint: str,
    proxies: tuple[FaultProxy, FaultProxy],
    figures: Figures,
) -> None:
    """Migrations, expirations and collections through a proxy failing half the requests:
    nothing lost, no row dangling, partial runs list their failures, a clean run finishes."""
    world = World(tmp_path, s3_endpoint, azure_endpoint, proxies)
    world.populate()
    world.check()
    for rule in ("migrate", "expire", "collect-cloud", "collect-archive"):
        before = world.injected
        partial = 0
        for _ in range(FAULTY_RUNS):
            world.faults(FAULT_RATE)
            outcome = world.shelf.run(rule=rule, yes=True)
            world.faults(0.0)
            assert outcome.status in ("ok", "partial"), outcome.as_json()
            if outcome.failed:
                partial += 1
                assert outcome.status == "partial"
                # each failed action names its key; a failed listing (scan), its tier
                assert all((f.key or f.rule == "scan") and f.error for f in outcome.failed)
                recorded = world.shelf.runs(limit=1)[0]
                assert recorded.status == "partial"
            world.check()
        injected = world.injected - before
        final = world.shelf.run(rule=rule, yes=True)
        assert final.status == "ok", final.as_json()
        assert not world.shelf.run(rule=rule, dry_run=True).plan.actions
        world.check()
        figures.add(
            f"store faults: {rule.split('-')[0]}",
            faults=injected,
            runs=FAULTY_RUNS + 1,
            partial_runs=partial,
            lost=0,
            dangling=0,
        )
        assert injected >= 25, f"only {injected} faults were injected during {rule}"
    # The work is done: every migrated row names the archive, every expired row is null,
    # and no orphan is left at its old key.
    values = world.app.values()
    assert sum(v.startswith(f"az://{world.container}/pre/m/") for v in values) == MIGRATED
    assert values.count("None") == EXPIRED
    held = world.objects()
    assert not [v for v in held if "/pre/o/" in v]
    counts = world.s3_proxy.counts + world.azure_proxy.counts
    assert world.injected >= 500, counts
    figures.add(
        "store faults: all kinds",
        **{
            f"fault_{name}": n
            for name, n in (world.s3_proxy.counts + world.azure_proxy.counts).items()
        },
    )


def test_transient_errors_are_typed_and_retried(
    tmp_path: Path, s3_endpoint: str, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    """500s, 503s, drops and cut bodies surface as StoreTransient (retryable) once retries
    are spent; with retries they are absorbed."""
    from shelflife.base.aio import run_sync
    from shelflife.config.model import TierConfig
    from shelflife.stores.s3 import S3Store

    s3_proxy, _ = proxies
    bucket = make_s3_bucket(s3_endpoint)
    base = s3_tier(behind(s3_endpoint, s3_proxy), bucket)
    strict = S3Store(TierConfig.model_validate({**base, "retries": 0}))
    patient = S3Store(TierConfig.model_validate({**base, "retries": 6}))
    run_sync(patient.put("k", b"x" * 4096))
    for fault in ("500", "503", "drop", "truncate"):
        s3_proxy.faults, s3_proxy.rate = (fault,), 1.0
        with pytest.raises(StoreTransient) as caught:
            run_sync(strict.get_bytes("k"))
        assert caught.value.retryable
        assert "failed this request" in caught.value.message
    s3_proxy.faults, s3_proxy.rate = ("500", "503", "drop", "drop-after", "truncate"), 0.5
    for _ in range(20):
        assert run_sync(patient.get_bytes("k")) == b"x" * 4096
    s3_proxy.rate = 0.0


def test_permanent_errors_are_not_retried(
    azure_endpoint: str, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    """A wrong account key (403) is reported after one request, retries or not."""
    from shelflife.base.aio import run_sync
    from shelflife.config.model import TierConfig
    from shelflife.errors import StoreAuthError
    from shelflife.stores.azure import AzureStore

    _, azure_proxy = proxies
    tier = azure_tier(behind(azure_endpoint, azure_proxy), make_azure_container(azure_endpoint))
    wrong_key = base64.b64encode(b"not the account key" * 3).decode()
    wrong = AzureStore(TierConfig.model_validate({**tier, "secret_key": wrong_key}))
    before = azure_proxy.requests
    with pytest.raises(StoreAuthError):
        run_sync(wrong.head("anything"))
    assert azure_proxy.requests - before == 1


def test_blob_properties_are_retried_as_the_tier_says(
    azure_endpoint: str, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    """The properties read through Azure's SDK (a checksum verification, an archive check)
    is retried the tier's ``retries`` times, not the SDK's default three times 15-24 s."""
    from shelflife.base.aio import run_sync
    from shelflife.config.model import TierConfig
    from shelflife.errors import StoreError
    from shelflife.stores.azure import AzureStore

    _, azure_proxy = proxies
    tier = azure_tier(behind(azure_endpoint, azure_proxy), make_azure_container(azure_endpoint))
    store = AzureStore(TierConfig.model_validate({**tier, "retries": 1}))
    run_sync(store.put("k", b"bytes"))
    assert run_sync(store.archived("k")) is False
    azure_proxy.faults, azure_proxy.rate = ("503",), 1.0
    before = azure_proxy.requests
    try:
        with pytest.raises(StoreError, match="properties"):
            run_sync(store.archived("k"))
    finally:
        azure_proxy.rate = 0.0
    assert azure_proxy.requests - before == 2  # one try and the tier's one retry


def test_the_sdk_retry_policy_backs_off_like_the_store_client() -> None:
    """Waits of the Azure SDK policy: 0.1 s doubling to at most 5 s (with jitter below
    that), the tier's retries for every kind of error."""
    from shelflife.stores.azure import sdk_retry_policy

    policy = sdk_retry_policy(7)
    assert (policy.total_retries, policy.connect_retries) == (7, 7)
    assert (policy.read_retries, policy.status_retries) == (7, 7)
    waits = [policy.get_backoff_time({"count": count}) for count in range(1, 12)]
    assert 0.05 <= waits[0] <= 0.1
    assert 0.1 <= waits[1] <= 0.2
    assert all(2.5 <= wait <= 5.0 for wait in waits[7:])  # capped


def test_retrying_waits_only_for_retryable_errors() -> None:
    """Transient errors are tried again up to the limit; a permanent one is raised at once."""
    from shelflife.base.aio import run_sync
    from shelflife.base.retry import retrying
    from shelflife.errors import ObjectNotFound

    calls: list[int] = []

    def failing(times: int, error: Exception) -> Any:
        async def operation() -> str:
            calls.append(1)
            if len(calls) <= times:
                raise error
            return "done"

        return operation

    transient = StoreTransient("cut short")
    assert run_sync(retrying(failing(2, transient), retries=2, what="t", initial=0.001)) == "done"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(StoreTransient):
        run_sync(retrying(failing(5, transient), retries=2, what="t", initial=0.001))
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ObjectNotFound):
        run_sync(retrying(failing(5, ObjectNotFound("gone")), retries=5, what="t", initial=0.001))
    assert len(calls) == 1


def test_an_invalid_account_key_is_a_config_error() -> None:
    """A key that is not base64 is refused when the store is built, with a hint."""
    from shelflife.config.model import TierConfig
    from shelflife.errors import StoreConfigError
    from shelflife.stores.azure import AzureStore

    tier = azure_tier("http://127.0.0.1:9/devstoreaccount1", "container")
    with pytest.raises(StoreConfigError) as caught:
        AzureStore(TierConfig.model_validate({**tier, "secret_key": "=not base64="}))
    assert "account key is not valid" in caught.value.message
    assert caught.value.hint


def test_a_listing_that_keeps_failing_leaves_the_run_partial_not_failed(
    tmp_path: Path, s3_endpoint: str, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    """Every listing of a tier answered 503: the run plans on the last inventory, lists the
    scan failure, still takes its actions (each re-checked by HEAD) and ends partial."""
    s3_proxy, _ = proxies
    bucket = make_s3_bucket(s3_endpoint)
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    cloud = s3_tier(behind(s3_endpoint, s3_proxy), bucket, retries=1)
    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {"cloud": cloud},
        "databases": {"app": {"url": app.url}},
        "references": [
            {"database": "app", "table": app.name, "column": "path", "on_expire": "null"}
        ],
        "rules": [{"id": "expire", "tier": "cloud", "action": "expire", "after": "0s"}],
    }
    shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))
    for key in ("a.bin", "b.bin"):
        stored = shelf.put(content(key), key, tier="cloud")
    app.insert(stored.ref)
    shelf.ledger.purge_expired_leases(utcnow().replace(year=utcnow().year + 1))
    s3_proxy.faults, s3_proxy.rate, s3_proxy.only = ("503",), 1.0, b"list-type=2"
    try:
        outcome = shelf.run(yes=True)
    finally:
        s3_proxy.rate, s3_proxy.only = 0.0, None
    assert outcome.status == "partial", outcome.as_json()
    assert [(f.rule, f.tier) for f in outcome.failed] == [("scan", "cloud")]
    assert "listing failed" in outcome.failed[0].error
    assert sorted(a.key for a in outcome.actions) == ["a.bin", "b.bin"]
    assert app.values() == ["None"]  # the row of b.bin, expired with it (on_expire = null)
    assert s3_proxy.counts["503"] >= 2  # the listing and its one retry, both refused
