"""The configuration built from the seed applications' environment variables.

Used with no config file when any of :data:`SWITCHES` is set. ``STORAGE_PROVIDER``
(``LOCAL`` when unset) picks the cloud tier: LOCAL (a second folder), AWS (S3), OCI and
CUSTOM (S3-compatible at ``STORAGE_ENDPOINT``), GCP (the S3-interoperable endpoint with
HMAC keys), AZURE (``STORAGE_ACCESS_KEY`` is the account name, ``STORAGE_SECRET_KEY`` its
key). The local tier is ``STORAGE_OUTPUT_DIR`` with a 140 GB capacity and 80 % / 70 %
watermarks (rows may also spell it ``REMOTE_STORAGE_OUTPUT_DIR``), and the one rule
migrates local → cloud above the watermark.

``STORAGE_DATABASE_URL`` (else ``DATABASE_URL``) names the application database; the
columns the original service rewrote (:data:`ORIGINAL_COLUMNS`) are candidates, declared
as references when the shelf opens if they exist there (see
:mod:`shelflife.service.environment`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shelflife.errors import ConfigError

PROVIDERS = ("LOCAL", "AWS", "OCI", "GCP", "AZURE", "CUSTOM")
CLOUD_PREFIX = "outputs"
PUBLIC_URL = "/static/outputs/{key}"  # where the original service served local outputs
# Any of these set (and no config file) selects the environment. DATABASE_URL alone does
# not: applications set it for themselves, and it says nothing of storage.
SWITCHES = (
    "STORAGE_PROVIDER",
    "STORAGE_OUTPUT_DIR",
    "STORAGE_BUCKET",
    "STORAGE_ENDPOINT",
    "STORAGE_ACCESS_KEY",
    "STORAGE_SECRET_KEY",
    "STORAGE_REGION",
    "STORAGE_DATABASE_URL",
    "REMOTE_STORAGE_OUTPUT_DIR",
)
DATABASE = "app"
# (table, column): the rows the original service rewrote when it moved an output.
ORIGINAL_COLUMNS = (
    ("video_jobs", "output_path"),
    ("nexus_jobs", "output_path"),
    ("scheduled_posts", "video_path"),
)


def selects_environment(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for the seed-compatible configuration."""
    return any(env.get(name, "").strip() for name in SWITCHES)


def seed_environment_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Build a raw configuration from STORAGE_* variables."""
    provider = env.get("STORAGE_PROVIDER", "").strip().upper() or "LOCAL"
    if provider not in PROVIDERS:
        raise ConfigError(
            f"unknown STORAGE_PROVIDER {provider!r}",
            path="STORAGE_PROVIDER",
            hint=f"use one of {', '.join(PROVIDERS)}",
        )
    output_dir = _folder(env.get("STORAGE_OUTPUT_DIR", "")) or "data/storage/outputs"
    local: dict[str, Any] = {
        "url": f"file://{output_dir}",
        "ref_format": f"{output_dir}/{{key}}",
        "public_url": PUBLIC_URL,
        "create": True,  # as the older services did
        "capacity": "140GB",
        "high_watermark": "80%",
        "low_watermark": "70%",
    }
    remote = _folder(env.get("REMOTE_STORAGE_OUTPUT_DIR", ""))
    if remote and remote != output_dir:
        local["ref_aliases"] = [f"{remote}/{{key}}"]
    raw: dict[str, Any] = {
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
    database = application_database(env)
    if database:
        raw["databases"] = {DATABASE: {"url": database}}
    return raw


# An application's asynchronous driver, as its own DATABASE_URL names it, and the
# synchronous scheme shelflife reads the same database with.
_ASYNC_SCHEMES = {
    "postgres": "postgresql",  # Heroku's spelling, which SQLAlchemy does not take
    "postgresql+asyncpg": "postgresql",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql+aiomysql": "mysql",
    "mysql+asyncmy": "mysql",
    "sqlite+aiosqlite": "sqlite",
}


def application_database(env: Mapping[str, str]) -> str:
    """``STORAGE_DATABASE_URL``, else ``DATABASE_URL``, with an asynchronous driver
    replaced by the synchronous one shelflife uses (``postgresql+asyncpg://`` →
    ``postgresql://``); "" when neither is set."""
    url = env.get("STORAGE_DATABASE_URL", "").strip() or env.get("DATABASE_URL", "").strip()
    scheme, sep, rest = url.partition("://")
    if sep and scheme in _ASYNC_SCHEMES:
        return f"{_ASYNC_SCHEMES[scheme]}://{rest}"
    return url


def seed_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """What the environment says beyond the raw configuration: the provider, and the
    original columns to declare if they exist (with a database only)."""
    provider = env.get("STORAGE_PROVIDER", "").strip().upper() or "LOCAL"
    database = application_database(env)
    candidates = [
        # Retention expires cloud objects the rows still name: the column is blanked
        # rather than left pointing at nothing (the original deleted the object only).
        {"database": DATABASE, "table": table, "column": column, "on_expire": "null"}
        for table, column in ORIGINAL_COLUMNS
    ]
    return {"provider": provider, "candidate_references": candidates if database else []}


def _folder(value: str) -> str:
    value = value.strip()
    return (value.rstrip("/") or "/") if value else ""


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
