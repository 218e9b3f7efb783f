"""Tiers built from the seed applications' ``STORAGE_*`` environment variables.

``STORAGE_PROVIDER`` picks the cloud tier: LOCAL (a second folder), AWS (S3), OCI and
CUSTOM (S3-compatible at ``STORAGE_ENDPOINT``), GCP (the S3-interoperable endpoint with
HMAC keys), AZURE (``STORAGE_ACCESS_KEY`` is the account name, ``STORAGE_SECRET_KEY`` its
key). The local tier is ``STORAGE_OUTPUT_DIR`` with a 140 GB capacity and 80 % / 70 %
watermarks, and the one rule migrates local → cloud above the watermark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shelflife.errors import ConfigError

PROVIDERS = ("LOCAL", "AWS", "OCI", "GCP", "AZURE", "CUSTOM")
CLOUD_PREFIX = "outputs"


def seed_environment_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Build a raw configuration from STORAGE_* variables."""
    provider = env.get("STORAGE_PROVIDER", "LOCAL").strip().upper()
    if provider not in PROVIDERS:
        raise ConfigError(
            f"unknown STORAGE_PROVIDER {provider!r}",
            path="STORAGE_PROVIDER",
            hint=f"use one of {', '.join(PROVIDERS)}",
        )
    output_dir = env.get("STORAGE_OUTPUT_DIR", "data/storage/outputs").rstrip("/") or "/"
    local: dict[str, Any] = {
        "url": f"file://{output_dir}",
        "ref_format": f"{output_dir}/{{key}}",
        "create": True,  # as the older services did
        "capacity": "140GB",
        "high_watermark": "80%",
        "low_watermark": "70%",
    }
    return {
        "catalog": {"url": "sqlite:///data/shelflife.db"},
        "tiers": {"local": local, "cloud": _cloud_tier(provider, env)},
        "rules": [
            {
                "id": "keep-local-under-watermark",
                "tier": "local",
                "action": "migrate",
                "to": "cloud",
                "when": "over-watermark",
                "order": "oldest",
            }
        ],
    }


def _cloud_tier(provider: str, env: Mapping[str, str]) -> dict[str, Any]:
    if provider == "LOCAL":
        return {
            "url": "file://data/storage/cold",
            "ref_format": "data/storage/cold/{key}",
            "create": True,
        }
    bucket = _required(env, "STORAGE_BUCKET", provider)
    tier: dict[str, Any] = {}
    for name, field in (("STORAGE_ACCESS_KEY", "access_key"), ("STORAGE_SECRET_KEY", "secret_key")):
        if env.get(name):
            tier[field] = env[name]
    if env.get("STORAGE_REGION"):
        tier["region"] = env["STORAGE_REGION"]
    if provider == "AZURE":
        tier["url"] = f"az://{bucket}/{CLOUD_PREFIX}"
        tier["ref_format"] = f"az://{bucket}/{CLOUD_PREFIX}/{{key}}"
        if env.get("STORAGE_ENDPOINT"):
            tier["endpoint"] = env["STORAGE_ENDPOINT"]
        return tier
    tier["url"] = f"s3://{bucket}/{CLOUD_PREFIX}"
    tier["ref_format"] = f"s3://{bucket}/{CLOUD_PREFIX}/{{key}}"
    if provider == "GCP":
        tier["endpoint"] = env.get("STORAGE_ENDPOINT") or "https://storage.googleapis.com"
        tier.setdefault("region", "auto")
    elif provider in ("OCI", "CUSTOM"):
        tier["endpoint"] = _required(env, "STORAGE_ENDPOINT", provider)
    elif env.get("STORAGE_ENDPOINT"):
        tier["endpoint"] = env["STORAGE_ENDPOINT"]
    return tier


def _required(env: Mapping[str, str], name: str, provider: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"STORAGE_PROVIDER={provider} needs {name}", path=name)
    return value
