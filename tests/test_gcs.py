"""gs:// tiers against gcp-storage-emulator: why a gateway stands between them, a migration
with row rewrite onto GCS, and GCS's own error messages.

The shared backend suite (tests/test_stores.py) runs on GCS too; see
tests/support/gcs_gateway.py for what the gateway translates and adds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import urllib.parse
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import obstore as obs
import pytest
from obstore.store import GCSStore

from shelflife.config.model import TierConfig
from shelflife.errors import StoreAuthError, StoreConfigError
from shelflife.stores import open_store
from tests.support.apps import AppTable
from tests.support.cli import shelflife, write_config
from tests.support.servers import gcs_tier, make_gcs_bucket, write_gcs_service_account

pytestmark = pytest.mark.gcs


def _failure(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return str(exc).splitlines()[0]
    return "succeeded"


def test_obstore_cannot_use_the_emulator_without_the_gateway(
    gcs_emulator: str, gcs_credentials: Path
) -> None:
    """obstore speaks GCS's XML API only; the emulator serves the JSON API and, of the XML
    API, a bare GET and PUT of an object. Each failure is pinned here: when this test fails,
    the emulator has learnt the XML API and tests/support/gcs_gateway.py can go."""

    def direct(bucket: str) -> GCSStore:
        return GCSStore(
            bucket,
            config={"service_account": str(gcs_credentials), "base_url": gcs_emulator},
            client_options={"allow_http": True},
            retry_config={"max_retries": 0},
        )

    # obstore percent-encodes the whole bucket name (test-… is sent as test%2D…), and the
    # emulator's XML routes match [-.\w]+ on the raw path: every request is a 501.
    dashed = direct(make_gcs_bucket(gcs_emulator))
    assert "501 Not Implemented" in _failure(lambda: obs.put(dashed, "k", b"bytes"))
    bucket = make_gcs_bucket(gcs_emulator, f"plain{uuid.uuid4().hex[:12]}")
    store = direct(bucket)
    failures = {
        # The bytes are stored, but the answer lacks the ETag obstore requires.
        "put": _failure(lambda: obs.put(store, "k", b"bytes")),
        # The bytes come back, without the Last-Modified header obstore requires.
        "get": _failure(lambda: obs.get(store, "k").bytes()),
        "head": _failure(lambda: obs.head(store, "k")),
        "list": _failure(lambda: obs.list(store).collect()),
        "delete": _failure(lambda: obs.delete(store, "k")),
        "multipart": _failure(
            lambda: obs.put(store, "big", b"x" * (6 << 20), use_multipart=True, chunk_size=5 << 20)
        ),
        # The emulator's XML PUT handler fails on the empty body (len(None)) and drops the
        # connection.
        "copy": _failure(lambda: obs.copy(store, "k", "k2")),
    }
    assert "ETag Header missing" in failures["put"]
    assert "Last-Modified Header missing" in failures["get"]
    for operation in ("head", "list", "delete", "multipart"):
        assert "501 Not Implemented" in failures[operation], failures
    assert "error sending request" in failures["copy"]
    stored = httpx.get(f"{gcs_emulator}/storage/v1/b/{bucket}/o/k", params={"alt": "media"})
    assert stored.content == b"bytes"


def _emulator_bytes(emulator: str, bucket: str, name: str) -> bytes | None:
    """An object's bytes straight from the emulator's JSON API, past the gateway and obstore."""
    answer = httpx.get(
        f"{emulator}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}",
        params={"alt": "media"},
    )
    return None if answer.status_code == 404 else answer.content


@pytest.mark.invariant("I1", "I2")
def test_shelflife_run_migrates_to_gcs_and_rewrites_the_rows(
    tmp_path: Path, gcs_emulator: str, gcs_endpoint: str, gcs_credentials: Path
) -> None:
    """`shelflife run` moves old objects from a file:// tier to a gs:// tier: the bytes
    arrive intact in the emulator, the local copies go, and every row naming them (its alias
    spelling too) now names the gs:// location; a young object and its row stay put."""
    bucket = make_gcs_bucket(gcs_endpoint)
    cloud = gcs_tier(gcs_endpoint, bucket, gcs_credentials, prefix="archive")
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    config = write_config(
        tmp_path,
        app,
        rules='[[rules]]\nid = "cold"\ntier = "local"\naction = "migrate"\nto = "cloud"\n'
        'after = "7d"\n',
        extra="[tiers.cloud]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in cloud.items()),
    )
    old = time.time() - timedelta(days=30).total_seconds()
    originals: dict[str, bytes] = {}
    for key, size in [("renders/ä 0.mp4", 9 << 20), ("renders/b 1.mp4", 3000), ("young.mp4", 10)]:
        path = tmp_path / "outputs" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        originals[key] = os.urandom(size)  # the first is above the multipart threshold
        path.write_bytes(originals[key])
        if key != "young.mp4":
            os.utime(path, (old, old))
    app.insert(
        *(f"data/storage/outputs/{key}" for key in originals),
        "/workspace/outputs/renders/ä 0.mp4",
    )

    result = shelflife("-c", str(config), "run", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "ok"
    assert sorted(a["key"] for a in body["actions"]) == ["renders/b 1.mp4", "renders/ä 0.mp4"]
    for key in ("renders/ä 0.mp4", "renders/b 1.mp4"):
        arrived = _emulator_bytes(gcs_emulator, bucket, f"archive/{key}")
        assert arrived is not None
        assert hashlib.sha256(arrived).digest() == hashlib.sha256(originals[key]).digest()
        assert not (tmp_path / "outputs" / key).exists()
    assert (tmp_path / "outputs" / "young.mp4").read_bytes() == originals["young.mp4"]
    assert _emulator_bytes(gcs_emulator, bucket, "archive/young.mp4") is None
    assert app.values() == sorted(
        [
            f"gs://{bucket}/archive/renders/ä 0.mp4",
            f"gs://{bucket}/archive/renders/ä 0.mp4",
            f"gs://{bucket}/archive/renders/b 1.mp4",
            "data/storage/outputs/young.mp4",
        ]
    )
    again = shelflife("-c", str(config), "run", "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["actions"] == []


def test_a_refused_service_account_is_named_with_its_setting(
    tmp_path: Path, gcs_endpoint: str
) -> None:
    """Another account's key: every operation, a listing included, is an auth error that
    names credentials_file (obstore reports a refused listing as a generic error)."""
    other = tmp_path / "other-account.json"
    write_gcs_service_account(other)
    store = open_store(
        TierConfig.model_validate(gcs_tier(gcs_endpoint, make_gcs_bucket(gcs_endpoint), other))
    )

    async def listing() -> None:
        async for _ in store.list():
            pass

    for operation in (store.head("x"), store.put("x", b"y"), listing()):
        with pytest.raises(StoreAuthError) as refused:
            asyncio.run(operation)
        assert "credentials_file" in (refused.value.hint or "")


def test_a_missing_or_broken_key_file_is_a_configuration_error(
    tmp_path: Path, gcs_endpoint: str
) -> None:
    missing = gcs_tier(gcs_endpoint, "bucket", tmp_path / "nowhere.json")
    with pytest.raises(StoreConfigError, match="no service account key file at") as error:
        open_store(TierConfig.model_validate(missing), name="cloud")
    assert "credentials_file" in (error.value.hint or "")
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account"}')
    with pytest.raises(StoreConfigError) as error:
        open_store(TierConfig.model_validate({**missing, "credentials_file": str(broken)}))
    assert "\n" not in error.value.message
    assert "service account" in error.value.message
