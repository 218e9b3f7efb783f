"""Loopback servers and the stores on them: free ports, S3 buckets, Azure containers, tiers.

conftest.py starts the servers (moto's S3 server, Azurite) as session fixtures; these are
the plain functions that the fixtures and the tests share.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

# Azurite's published development account (the same in every Azurite install).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


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


def make_s3_bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=name)
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


def tier_config(kind: str, request: pytest.FixtureRequest, path: Path) -> dict[str, object]:
    """The raw tier config of a fresh, empty store of the given backend kind."""
    if kind == "memory":
        return {"url": f"memory://{uuid.uuid4().hex}"}
    if kind == "file":
        return {"url": f"file://{path}"}
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return s3_tier(endpoint, make_s3_bucket(endpoint))
    if kind == "azure":
        endpoint = request.getfixturevalue("azure_endpoint")
        return azure_tier(endpoint, make_azure_container(endpoint))
    raise AssertionError(f"unknown backend {kind}")
