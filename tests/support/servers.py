"""Loopback servers and the stores on them: free ports, S3 buckets, Azure containers, GCS
buckets, tiers.

conftest.py starts the servers (moto's S3 server, Azurite, gcp-storage-emulator behind
tests/support/gcs_gateway.py) as session fixtures; these are the plain functions that the
fixtures and the tests share.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

# Azurite's published development account (the same in every Azurite install).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
GCS_CLIENT_EMAIL = "shelflife@demo.iam.gserviceaccount.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], name: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s")


def s3_client(s3_endpoint: str) -> Any:
    """A boto3 client for the test S3 server (the application's own writes, checks)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def make_s3_bucket(s3_endpoint: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def make_azure_container(azure_endpoint: str) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"test-{uuid.uuid4().hex[:12]}"
    service = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
        f"BlobEndpoint={azure_endpoint};"
    )
    service.create_container(name)
    return name


def write_gcs_service_account(path: Path) -> None:
    """A service-account key file with a fresh RSA key, as the Google console gives one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "1",
        "private_key": private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "client_email": GCS_CLIENT_EMAIL,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(account))


def make_gcs_bucket(gcs_endpoint: str, name: str = "") -> str:
    """A bucket through the JSON API, without soft delete (deleted bytes are dropped)."""
    import httpx

    name = name or f"test-{uuid.uuid4().hex[:12]}"
    made = httpx.post(
        f"{gcs_endpoint}/storage/v1/b", params={"project": "demo"}, json={"name": name}
    )
    made.raise_for_status()
    patched = httpx.patch(
        f"{gcs_endpoint}/storage/v1/b/{name}",
        json={"softDeletePolicy": {"retentionDurationSeconds": "0"}},
    )
    patched.raise_for_status()
    return name


def s3_tier(endpoint: str, bucket: str, prefix: str = "pre", **extra: object) -> dict[str, object]:
    return {
        "url": f"s3://{bucket}/{prefix}",
        "endpoint": endpoint,
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
        "ref_format": f"s3://{bucket}/{prefix}/{{key}}",
        **extra,
    }


def azure_tier(endpoint: str, container: str, prefix: str = "pre") -> dict[str, object]:
    return {
        "url": f"az://{container}/{prefix}",
        "endpoint": endpoint,
        "access_key": AZURE_ACCOUNT,
        "secret_key": AZURE_KEY,
        "ref_format": f"az://{container}/{prefix}/{{key}}",
    }


def gcs_tier(
    endpoint: str, bucket: str, credentials_file: Path, prefix: str = "pre"
) -> dict[str, object]:
    return {
        "url": f"gs://{bucket}/{prefix}",
        "endpoint": endpoint,
        "credentials_file": str(credentials_file),
        "ref_format": f"gs://{bucket}/{prefix}/{{key}}",
    }


def tier_config(kind: str, request: pytest.FixtureRequest, path: Path) -> dict[str, object]:
    """The raw tier config of a fresh, empty store of the given backend kind."""
    if kind == "memory":
        return {"url": f"memory://{uuid.uuid4().hex}"}
    if kind == "file":
        return {"url": f"file://{path}", "create": True}
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return s3_tier(endpoint, make_s3_bucket(endpoint))
    if kind == "azure":
        endpoint = request.getfixturevalue("azure_endpoint")
        return azure_tier(endpoint, make_azure_container(endpoint))
    if kind == "gcs":
        endpoint = request.getfixturevalue("gcs_endpoint")
        return gcs_tier(
            endpoint, make_gcs_bucket(endpoint), request.getfixturevalue("gcs_credentials")
        )
    raise AssertionError(f"unknown backend {kind}")
