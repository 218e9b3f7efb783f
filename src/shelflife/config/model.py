"""Typed configuration: every value is parsed and checked here, once.

Library code receives these objects and never reads the environment or files itself.
Unknown keys are errors (``extra="forbid"``), so a typo never passes silently.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from shelflife.base.units import parse_duration, parse_ratio, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

MAX_PRESIGN_TTL = timedelta(days=7)  # S3 rejects longer-lived signatures

_S3_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
)
_AZURE_TIERS = ("Hot", "Cool", "Cold", "Archive")
STORAGE_CLASSES: dict[str, tuple[str, ...]] = {
    "s3": _S3_CLASSES,
    "az": _AZURE_TIERS,
    "azure": _AZURE_TIERS,
    "gs": ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"),
}
# Classes whose objects cannot be read until restored (GCS ARCHIVE is read at once).
UNREADABLE_CLASSES: dict[str, tuple[str, ...]] = {
    "s3": ("GLACIER", "DEEP_ARCHIVE"),
    "az": ("Archive",),
    "azure": ("Archive",),
}

VerifyMethod = Literal["checksum", "read-back"]
"""How a copy written to a tier is verified before anything points at it (DESIGN I2):
``checksum`` — by what the store itself says of the bytes it received (S3: the upload's
ETag, else its stored SHA-256; Azure: its Content-MD5; a local tier: the file written,
fsynced and renamed into place), reading back only when the store cannot vouch;
``read-back`` — always read back and hashed."""


def _parse_capacity(value: Any) -> Any:
    if value is None or value == "disk":
        return value
    return parse_size(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogConfig(_Strict):
    """Where shelflife keeps its inventory, journal and run history."""

    url: str = Field(
        default="sqlite:///data/shelflife.db",
        description=(
            "shelflife's own database (inventory, journal, plans, run history): "
            "SQLite, or PostgreSQL (`postgresql+psycopg://user@host/db`) in "
            "production, required when Celery workers on several machines share it. "
            "Its schema is migrated (Alembic) when it is opened"
        ),
    )


class DatabaseConfig(_Strict):
    """An application database whose rows point at objects."""

    url: SecretStr = Field(
        description=(
            "an application database whose rows point at objects: any SQLAlchemy URL "
            "(PostgreSQL, MariaDB/MySQL with `mysql+pymysql://`, SQLite). A secret: "
            "use `${VAR}` or `url_file`"
        ),
    )


class TierCostConfig(_Strict):
    """A tier's prices, for the cost of a plan: each field not given comes from the
    built-in table for the tier's store and storage class (``docs/costs.md``)."""

    gb_month: float | None = Field(
        default=None,
        ge=0,
        description="storage price per GB (2^30 bytes) per month (30 days)",
    )
    per_1k_put: float | None = Field(
        default=None,
        ge=0,
        description="price of 1,000 write requests (PUT, COPY, each multipart part)",
    )
    per_1k_get: float | None = Field(
        default=None,
        ge=0,
        description="price of 1,000 read requests (GET)",
    )
    per_gb_retrieval: float | None = Field(
        default=None,
        ge=0,
        description="price per GB read back out of the tier (IA, archive classes)",
    )
    min_days: float | None = Field(
        default=None,
        ge=0,
        description=(
            "minimum storage duration: an object moved or deleted earlier is billed "
            "for the days left"
        ),
    )
    min_object_size: Size | None = Field(
        default=None,
        description='objects smaller than this are billed as this size (`"128KiB"`)',
    )


class TierConfig(_Strict):
    """A named store with a capacity, watermarks and the spelling rows use for it."""

    url: str = Field(
        description=(
            "where the tier's objects are: `file://PATH`, `s3://BUCKET[/PREFIX]`, "
            "`az://CONTAINER[/PREFIX]`, `gs://BUCKET[/PREFIX]` or `memory://NAME`; "
            "never with credentials in it"
        ),
    )
    ref_format: str = Field(
        default="{key}",
        description=(
            "how a row spells a location on this tier, with `{key}` exactly once "
            "(`data/storage/outputs/{key}`, `s3://bucket/{key}`); migrations write "
            "this spelling"
        ),
    )
    ref_aliases: tuple[str, ...] = Field(
        default=(),
        description=(
            "other spellings of the same place (`/workspace/outputs/{key}`), each "
            "with `{key}` once: read in rows, never written"
        ),
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "what `url()` returns for an object on a local tier "
            "(`/static/outputs/{key}`); without it, a `file://` URL"
        ),
    )
    capacity: Annotated[int | Literal["disk"] | None, BeforeValidator(_parse_capacity)] = Field(
        default=None,
        description=(
            'the tier\'s size (`"140GB"`), or `"disk"` (`file://` tiers only) for the '
            "filesystem's size; needed by watermark rules. Without it the tier has no "
            "usage ratio"
        ),
    )
    high_watermark: Ratio = Field(
        default=0.80,
        description=(
            'a migrate rule with `when = "over-watermark"` starts moving objects off '
            "the tier above this share of `capacity`"
        ),
    )
    low_watermark: Ratio = Field(
        default=0.70,
        description=("and stops once usage is at or below this share; not above `high_watermark`"),
    )
    endpoint: str | None = Field(
        default=None,
        description=(
            "a custom endpoint: MinIO, Ceph, OCI, GCS interoperability, Azurite; "
            "`http://` endpoints allow plain HTTP"
        ),
    )
    region: str | None = Field(
        default=None,
        description="the S3 region (`us-east-1` when not set)",
    )
    access_key: SecretStr | None = Field(
        default=None,
        description=(
            "S3 access key id; for Azure, the account name. From the environment when "
            "not set. A secret: `${VAR}` or `access_key_file`"
        ),
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description=(
            "S3 secret access key; for Azure, the account key. A secret: `${VAR}` or "
            "`secret_key_file`; masked in every log line"
        ),
    )
    session_token: SecretStr | None = Field(
        default=None,
        description="S3 temporary credentials' session token (`session_token_file` allowed)",
    )
    credentials_file: str | None = Field(
        default=None,
        description=(
            "GCS: a service-account JSON key; application-default credentials when not set"
        ),
    )
    virtual_hosted_style: bool = Field(
        default=False,
        description="S3 requests to `bucket.host` instead of path-style `host/bucket`",
    )
    allow_http: bool | None = Field(
        default=None,
        description=(
            "force plain HTTP on or off; by default allowed exactly when `endpoint` is `http://`"
        ),
    )
    presign_ttl: Duration = Field(
        default=timedelta(hours=1),
        description=(
            "lifetime of presigned URLs, between 1s and 7d (S3 refuses longer-lived signatures)"
        ),
    )
    upload_lease: Duration = Field(
        default=timedelta(hours=1),
        description=(
            "how long an object written through shelflife is kept out of orphan "
            "collection, so that the application has time to write its row"
        ),
    )
    storage_class: str | None = Field(
        default=None,
        description=(
            "applied to every write: S3 `STANDARD_IA`, `GLACIER_IR`, `GLACIER`, "
            "`DEEP_ARCHIVE`, …; Azure `Hot`, `Cool`, `Cold`, `Archive`; GCS "
            "`NEARLINE`, `COLDLINE`, `ARCHIVE`. Objects in S3 "
            "`GLACIER`/`DEEP_ARCHIVE` and Azure `Archive` cannot be read until "
            "restored"
        ),
    )
    # None: ask the store (S3 buckets)
    versioned: bool | None = Field(
        default=None,
        description=(
            "whether the bucket keeps versions (a delete then only adds a delete "
            "marker); when not set, S3 buckets are asked"
        ),
    )
    multipart_threshold: Size = Field(
        default=8 * 1024 * 1024,
        description="objects above this size are uploaded in parts",
    )
    multipart_chunk_size: Size = Field(
        default=8 * 1024 * 1024,
        description="the size of each part (at least 5 MiB)",
    )
    verify: VerifyMethod = Field(
        default="checksum",
        description=(
            "how a copy migrated to this tier is proven before any row points at it: "
            '`"checksum"` by what the store says of the bytes it received, reading '
            'back only when it cannot vouch; `"read-back"` always read back and '
            "hashed (not for archive storage classes)"
        ),
    )
    cost: TierCostConfig = Field(
        default_factory=TierCostConfig,
        description=(
            "the tier's prices for the cost of a plan (`[tiers.NAME.cost]`); what is "
            "not given comes from the built-in table by store and `storage_class` "
            "(`file://` and `memory://`: 0)"
        ),
    )
    # A file:// tier's folder must exist (a misspelled path fails instead of starting an
    # empty tier) unless the tier asks for it to be created.
    create: bool = Field(
        default=False,
        description=(
            "`file://` tiers: create the folder if it is missing. Without it a "
            "missing folder is an error naming the path, so a misspelled `url` fails "
            "`check` instead of starting an empty tier"
        ),
    )
    # A failed request is retried this many times by shelflife (the HTTP clients retry
    # nothing: each attempt takes its rate-limit slot), and a failed operation (a
    # streamed read cut short, a copy) as many times, with exponential backoff; errors
    # that cannot pass (404, 403, bad config) never are.
    retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description=(
            "how many times a failed request is retried, and a failed operation (a "
            "streamed read cut short, a copy) too, with exponential back-off and "
            "jitter, or as long as the store asks after a throttling answer; only "
            "transient errors (5xx, 429, dropped connections, timeouts) are retried"
        ),
    )
    # One limiter per tier: shared by every transfer of a run, and by every process
    # using the same catalog (Celery workers, a daemon beside a run).
    max_requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description=(
            "at most this many requests a second to the tier (a listing page, a HEAD, a "
            "GET, a PUT, each part of a multipart upload), whatever the concurrency: "
            "requests are spaced `1/rate` apart, so no second holds more than this plus "
            "one; shared by every process using the same catalog. Unlimited when not "
            "set; either way a throttling answer (429, S3 `SlowDown`, Azure "
            "`ServerBusy`) holds the tier for the delay it asks and halves its rate for "
            "a while"
        ),
    )

    @field_validator("url", "endpoint", "public_url", mode="before")
    @classmethod
    def _no_credentials(cls, value: object) -> object:
        if isinstance(value, str) and "@" in value:
            try:
                parts = urlsplit(value)
                userinfo = parts.username is not None or parts.password is not None
            except ValueError:
                userinfo = False
            if userinfo:
                # Said without the value: it holds a secret.
                raise ValueError(
                    "holds credentials (user:password@); put them in access_key and "
                    "secret_key (or ${ENV_VAR}, or a secret file), never in a URL, which is "
                    "shown and logged"
                )
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ("file", "memory", "s3", "az", "azure", "gs"):
            raise ValueError(
                f"{url!r} has no supported scheme; use file://, s3://, az://, gs:// or memory://"
            )
        return url

    @field_validator("ref_format", "public_url")
    @classmethod
    def _one_key_placeholder(cls, template: str | None) -> str | None:
        if template is not None and template.count("{key}") != 1:
            raise ValueError(f"{template!r} must contain '{{key}}' exactly once")
        return template

    @field_validator("ref_aliases")
    @classmethod
    def _aliases_have_key(cls, aliases: tuple[str, ...]) -> tuple[str, ...]:
        for alias in aliases:
            if alias.count("{key}") != 1:
                raise ValueError(f"alias {alias!r} must contain '{{key}}' exactly once")
        return aliases

    @field_validator("presign_ttl")
    @classmethod
    def _bounded_ttl(cls, ttl: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= ttl <= MAX_PRESIGN_TTL:
            raise ValueError("must be between 1s and 7d (S3 rejects longer-lived signatures)")
        return ttl

    @model_validator(mode="after")
    def _watermarks_ordered(self) -> TierConfig:
        if self.storage_class is not None:
            allowed = STORAGE_CLASSES.get(self.scheme)
            if allowed is None:
                raise ValueError(
                    f"storage_class applies to s3:// and az:// tiers, not {self.scheme}://"
                )
            if self.storage_class not in allowed:
                raise ValueError(
                    f"storage_class {self.storage_class!r} is not one of {', '.join(allowed)}"
                )
            if self.verify == "read-back" and self.storage_class in UNREADABLE_CLASSES.get(
                self.scheme, ()
            ):
                raise ValueError(
                    f"verify = 'read-back' cannot apply to storage_class {self.storage_class!r}: "
                    "its objects cannot be read until restored; leave verify out (copies are "
                    "then verified by the store's checksum)"
                )
        if self.capacity == "disk" and self.scheme != "file":
            raise ValueError("capacity = 'disk' applies to file:// tiers only; give a size")
        if self.low_watermark > self.high_watermark:
            raise ValueError(
                f"low_watermark ({self.low_watermark:.0%}) is above "
                f"high_watermark ({self.high_watermark:.0%})"
            )
        return self

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]


ReferenceKind = Literal["value", "json", "array", "text"]


class ReferenceConfig(_Strict):
    """A column whose values point at objects.

    ``kind`` says how a value holds references: ``value`` (the whole value is one),
    ``json`` (strings of a JSON document: those under ``path``, or every one),
    ``array`` (the elements of a PostgreSQL array), ``text`` (every substring of free
    text spelled like a location on a tier: Markdown and HTML bodies).
    """

    database: str = Field(
        description="a name under `[databases]`",
    )
    table: str = Field(
        description="the table (`schema.table` allowed)",
    )
    column: str = Field(
        description="the column whose values point at objects",
    )
    where: str | None = Field(
        default=None,
        description='an SQL condition limiting the rows that count (`"deleted_at IS NULL"`)',
    )
    kind: ReferenceKind = Field(
        default="value",
        description=(
            "how a value holds references: `value` (the whole value), `json` (strings "
            "of a JSON document), `array` (elements of a PostgreSQL array), `text` "
            "(every substring spelled like a location: Markdown, HTML)"
        ),
    )
    path: str | None = Field(
        default=None,
        description=(
            'with `kind = "json"`: the JSONPath of the strings that hold references '
            "(`$.video`, `$.images[*].url`, `$..src`); every string when not set"
        ),
    )
    on_expire: Literal["null", "delete-row", "block"] = Field(
        default="block",
        description=(
            "what expiring an object does to the rows that point at it: `null` (blank "
            'the column; `kind = "value"` only), `delete-row`, or `block` (the object '
            "is not expired)"
        ),
    )
    # Above this share of values that match no tier's spelling, the source cannot be
    # trusted: rules that remove objects from the tiers it covers are refused.
    max_unmatched: Ratio = Field(
        default=0.01,
        description=(
            "above this share of values that match no tier's spelling, the source "
            "cannot be trusted: rules that remove objects from the tiers it covers "
            "are refused"
        ),
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> ReferenceConfig:
        if self.path is not None:
            if self.kind != "json":
                raise ValueError("'path' applies to kind = 'json' only")
            from shelflife.base.jsonpath import JsonPathError, compile_path

            try:
                compile_path(self.path)
            except JsonPathError as exc:
                raise ValueError(f"path {exc}") from None
        if self.kind != "value" and self.on_expire == "null":
            raise ValueError(
                f"on_expire = 'null' would blank a whole {self.kind} value for one of the "
                "references it holds; use 'block' or 'delete-row'"
            )
        return self

    @property
    def label(self) -> str:
        return f"{self.database}.{self.table}.{self.column}"


class IgnoredColumnConfig(_Strict):
    """A column that looks like it holds references but does not (``[[ignore_columns]]``)."""

    database: str = Field(
        description="a name under `[databases]`",
    )
    table: str = Field(
        description="the table",
    )
    column: str = Field(
        description=(
            "a column whose values look like locations but name no object (a log of "
            "old paths, external links)"
        ),
    )
    reason: str = Field(
        min_length=1,
        description="why it holds no reference (required; shown in reviews of the config)",
    )


AgeBasis = Literal["created", "modified", "last-access", "arrived"]
"""What a rule's age counts from: ``created`` (first seen or written anywhere, kept across
moves), ``modified`` (the bytes last changed), ``last-access`` (last read through
shelflife, else ``modified``), ``arrived`` (entered the tier it is on)."""


class RuleFilter(_Strict):
    """Which objects a rule considers: every condition given must hold."""

    prefix: str | None = Field(
        default=None,
        description="only keys that start with this",
    )
    suffix: str | None = Field(
        default=None,
        description="only keys that end with this",
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="only objects with these tags (given to `Shelf.put(..., tags=...)`)",
    )
    min_size: Size | None = Field(
        default=None,
        description="only objects at least this large",
    )
    max_size: Size | None = Field(
        default=None,
        description="only objects at most this large",
    )


class RuleConfig(_Strict):
    """One lifecycle rule; which fields apply depends on ``action``."""

    id: str = Field(
        description="a unique name, used by `--rule` and in every message",
    )
    tier: str = Field(
        description='the tier the rule acts on, or `"*"` for every tier',
    )
    action: Literal["migrate", "expire", "collect-orphans"] = Field(
        description=(
            "`migrate` (move objects to `to`), `expire` (delete objects older than "
            "`after`), `collect-orphans` (remove objects no row points at)"
        ),
    )
    to: str | None = Field(
        default=None,
        description="migrate: the destination tier",
    )
    when: Literal["over-watermark"] | None = Field(
        default=None,
        description=(
            'migrate: `"over-watermark"` acts above the tier\'s `high_watermark` and '
            "stops at `low_watermark`"
        ),
    )
    after: Duration | None = Field(
        default=None,
        description=(
            'migrate: move objects older than this instead (`"30d"`); expire '
            "(required): delete objects older than this. Counted from `age`"
        ),
    )
    order: Literal["oldest", "least-recently-used", "largest"] = Field(
        default="oldest",
        description=(
            "migrate: which objects go first: `oldest`, `least-recently-used` (last "
            "read through shelflife), `largest`; ties by key"
        ),
    )
    min_size: Size | None = Field(
        default=None,
        description="migrate: leave smaller objects alone",
    )
    filter: RuleFilter = Field(
        default_factory=RuleFilter,
        description=(
            "which objects the rule considers: `{ prefix, suffix, tags, min_size, "
            "max_size }` (below)"
        ),
    )
    grace: Duration = Field(
        default=timedelta(days=30),
        description="collect-orphans: only objects older than this, counted from `age`",
    )
    mode: Literal["delete", "quarantine"] = Field(
        default="delete",
        description=(
            "collect-orphans: `delete`, or `quarantine` (moved under "
            "`.shelflife-trash/` on the same tier, purged after `quarantine_days`)"
        ),
    )
    quarantine_days: int = Field(
        default=7,
        ge=0,
        description=(
            "collect-orphans: how long quarantined objects are kept before a `gc` purges them"
        ),
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="collect-orphans: objects re-checked and deleted per batch",
    )
    max_fraction: Ratio = Field(
        default=0.25,
        description=(
            "collect-orphans: refuse the rule on a tier when its candidates exceed "
            "this fraction of the tier's objects"
        ),
    )
    enabled: bool = Field(
        default=True,
        description="skip the rule when false",
    )
    age: AgeBasis | None = Field(
        default=None,
        description=(
            "what `after` and `grace` count from: `created` (first seen or written "
            "anywhere, kept across moves), `modified`, `last-access` (last read "
            "through shelflife, else `modified`), `arrived` (entered the tier). "
            "Default: `created` for expire and collect-orphans; for migrate "
            "`last-access` with `least-recently-used`, else `modified`"
        ),
    )
    """The instant ``after`` and ``grace`` count from (see :attr:`age_basis`)."""

    @property
    def age_basis(self) -> AgeBasis:
        """``age`` as set, else: ``created`` for expire and collect-orphans rules (an
        object's age survives moves, DESIGN I9); for migrate rules what their ``order``
        sorts by, ``last-access`` for least-recently-used and ``modified`` otherwise."""
        if self.age is not None:
            return self.age
        if self.action != "migrate":
            return "created"
        return "last-access" if self.order == "least-recently-used" else "modified"

    @model_validator(mode="after")
    def _action_fields(self) -> RuleConfig:
        if self.action == "migrate":
            if not self.to:
                raise ValueError("a migrate rule needs 'to' (the destination tier)")
            if self.when is None and self.after is None:
                raise ValueError("a migrate rule needs when = 'over-watermark' or after = '30d'")
            if self.to == self.tier:
                raise ValueError("'to' must name another tier than 'tier'")
        elif self.action == "expire":
            if self.after is None:
                raise ValueError("an expire rule needs 'after' (e.g. '90d')")
            if self.to or self.when:
                raise ValueError("an expire rule takes neither 'to' nor 'when'")
        elif self.to or self.when:
            raise ValueError("a collect-orphans rule takes neither 'to' nor 'when'")
        return self


class ScheduleConfig(_Strict):
    """When `shelflife daemon` (or Celery beat) runs the lifecycle and refreshes the stats:
    cron expressions in ``timezone``.
    """

    timezone: str = Field(
        default="UTC",
        description=(
            "the time zone the cron expressions are evaluated in (`UTC`, "
            "`Europe/Berlin`); wall-clock times fire once across DST changes"
        ),
    )
    lifecycle: str | None = Field(
        default="0 3 * * *",
        description=(
            "cron expression of the full lifecycle run (`shelflife run`) by "
            '`shelflife daemon` or Celery beat; `""` turns it off'
        ),
    )
    stats: str | None = Field(
        default="0 * * * *",
        description=(
            "cron expression of the stats refresh (scan, re-read the references, "
            'store the figures `/metrics` serves); `""` turns it off'
        ),
    )

    @field_validator("lifecycle", "stats")
    @classmethod
    def _valid_cron(cls, expression: str | None) -> str | None:
        if expression is not None and not expression.strip():
            return None  # "" turns an entry off (TOML has no null)
        if expression is not None and not croniter.is_valid(expression):
            raise ValueError(f"{expression!r} is not a valid cron expression (e.g. '0 3 * * *')")
        return expression

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (e.g. 'UTC', 'Europe/Berlin')") from None
        return name


class ExecutorConfig(_Strict):
    """How runs carry out their actions."""

    concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="transfers (and other actions) in flight at a time",
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description=(
            "objects journaled, repointed (one statement per source) and deleted together"
        ),
    )
    # Bytes a migration may hold in memory for objects sent whole: an object goes up in
    # one request when it is at most this divided by the transfers in flight (at least the
    # destination's multipart_threshold, at most 5000 MiB), in parts above that.
    transfer_memory: Size = Field(
        default=256 * 1024 * 1024,
        description=(
            "what a migration may hold in memory for objects sent whole: an object "
            "goes up in one request when it is at most this divided by the transfers "
            "in flight (at least the destination's `multipart_threshold`, at most "
            "5000 MiB), in parts above that; at least 8MiB"
        ),
    )
    # Deletions (expire, delete-orphan, quarantine) above either cap need --yes.
    max_delete: int = Field(
        default=10_000,
        ge=0,
        description=(
            "a run deleting more objects than this (expire, orphans, quarantine) needs `--yes`"
        ),
    )
    max_delete_bytes: Size | None = Field(
        default=1_000_000_000_000,
        description="a run deleting more bytes than this needs `--yes`",
    )
    # A run stops itself once more than this fraction of the actions it tried failed.
    max_error_fraction: Ratio = Field(
        default=0.10,
        description=(
            "a run stops itself once more than this fraction of the actions it tried failed"
        ),
    )
    # "local": this process takes every action; "celery": batches go to Celery workers.
    backend: Literal["local", "celery"] = Field(
        default="local",
        description=(
            '`"local"`: this process takes every action; `"celery"`: a run\'s batches '
            "go to Celery workers (`[celery]`)"
        ),
    )
    # With --no-scan, a tier scanned longer ago than this is planned on with a warning.
    stale_scan: Duration = Field(
        default=timedelta(days=1),
        description=(
            "with `--no-scan`, a tier scanned longer ago than this is planned on with a warning"
        ),
    )
    # How references are compared with the inventory: "auto" merges value columns read in
    # byte order with it (nothing copied) and copies the rest into the catalog for an
    # anti-join; "snapshot" always copies.
    marking: Literal["auto", "snapshot"] = Field(
        default="auto",
        description=(
            'how references are compared with the inventory: `"auto"` merges value '
            "columns read in byte order (nothing copied) and copies the rest into the "
            'catalog; `"snapshot"` always copies'
        ),
    )

    # The run lease: renewed by the coordinator every third of this; a run whose
    # coordinator is gone is taken over once it expires (docs/scaling.md).
    lease: Duration = Field(
        default=timedelta(seconds=30),
        description=(
            "the run lease's period: the coordinator renews it every third of this; its "
            "workers drop batches once it lapses, and a run whose coordinator died on "
            "another host (or fanned out) is taken over once it expired; 1s to 1h"
        ),
    )

    @field_validator("lease")
    @classmethod
    def _lease_period(cls, period: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= period <= timedelta(hours=1):
            raise ValueError("must be between 1s and 1h")
        return period

    @field_validator("transfer_memory")
    @classmethod
    def _room_for_a_part(cls, size: int) -> int:
        if size < 8 * 1024 * 1024:
            raise ValueError("must be at least 8MiB (a multipart part is held per transfer)")
        return size


class CeleryConfig(_Strict):
    """Celery for scheduled runs and fanned-out batches (``shelflife.celery``)."""

    # or amqp://guest:guest@host:5672//
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=(
            "the Celery broker: Redis (`redis://host:6379/0`) or RabbitMQ "
            "(`amqp://user:password@host:5672//`)"
        ),
    )
    # None: the broker if Redis, else required
    result_backend: str | None = Field(
        default=None,
        description=(
            "where task results go; by default the broker when it is Redis, required "
            "otherwise (`redis://…/1`, `db+postgresql://…`)"
        ),
    )
    # runs and stats
    queue: str = Field(
        default="shelflife",
        description=(
            "the queue of runs and stats refreshes (`shelflife.run`, `shelflife.refresh_stats`)"
        ),
    )
    # the batches of a fanned-out run
    batch_queue: str = Field(
        default="shelflife.batches",
        description="the queue of a fanned-out run's batches (`shelflife.execute_batch`)",
    )
    # Redis: redelivery of a lost task
    visibility_timeout: Duration = Field(
        default=timedelta(hours=1),
        description="Redis: how long before a task a lost worker held is delivered again",
    )
    # batches in flight per error check
    wave: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description=(
            "batches of a fanned-out run in flight at a time, so the error-fraction "
            "stop still applies"
        ),
    )

    # the original services' beat entry names (docs/migrating.md)
    compat_names: bool = Field(
        default=False,
        description=(
            "name the beat entries as the MinIO clean-up did: `minio-lifecycle-cleanup` "
            "(the `lifecycle` schedule) and `minio-storage-stats` (the `stats` schedule) "
            "instead of `shelflife-lifecycle` and `shelflife-stats`; the tasks under the "
            "original names are registered either way"
        ),
    )

    @model_validator(mode="after")
    def _backend(self) -> CeleryConfig:
        if self.result_backend is None and not self.broker_url.startswith(("redis", "rediss")):
            raise ValueError(
                "result_backend is needed with a non-Redis broker "
                "(e.g. 'redis://127.0.0.1:6379/1' or 'db+postgresql://…')"
            )
        return self

    @property
    def results(self) -> str:
        return self.result_backend or self.broker_url


class HealthConfig(_Strict):
    """The thresholds of the health `stats`, `/metrics` and `/metrics/storage` report."""

    orphan_warning: Ratio = Field(
        default=0.10,
        description=(
            "health is `warning` when a tier's orphaned fraction (of objects or of "
            "bytes, whichever is worse) reaches this"
        ),
    )
    orphan_critical: Ratio = Field(
        default=0.25,
        description="and `critical` when it reaches this",
    )
    usage_warning: Ratio = Field(
        default=0.80,
        description=("health is `warning` when a tier's usage reaches this share of its capacity"),
    )
    usage_critical: Ratio = Field(
        default=0.95,
        description="and `critical` when it reaches this",
    )


Scope = Literal["read", "write", "admin"]


class TokenConfig(_Strict):
    """A bearer token of the HTTP API, kept as its hash (``shelflife token create``)."""

    name: str = Field(
        min_length=1,
        max_length=128,
        description="who or what uses the token (1 to 128 characters)",
    )
    hash: str = Field(
        description=(
            "`sha256:` and 64 hex digits, as `shelflife token create` prints it; "
            "never the token itself"
        ),
    )
    scopes: tuple[Scope, ...] = Field(
        default=("read",),
        description=(
            "`read`, `write`, `admin`, each including the ones before: reads need "
            "`read`, uploads and deletes `write`, runs and forced deletes `admin`"
        ),
    )

    @field_validator("hash")
    @classmethod
    def _sha256(cls, value: str) -> str:
        digest = value.removeprefix("sha256:")
        if (
            not value.startswith("sha256:")
            or len(digest) != 64
            or not all(c in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(
                "must be 'sha256:' and 64 hex digits, as 'shelflife token create' prints it"
            )
        return value


class ApiConfig(_Strict):
    """``shelflife serve``: limits, what is public, tokens."""

    max_upload_size: Size = Field(
        default=5_000_000_000,
        description="an upload body larger than this is refused with 413 as it arrives",
    )
    # /metrics without a token (Prometheus scrapes it)
    public_metrics: bool = Field(
        default=True,
        description=(
            "`/metrics` and `/metrics/storage` answer without a token (Prometheus scrapes them)"
        ),
    )
    # the page at / without a token
    public_dashboard: bool = Field(
        default=True,
        description="the dashboard at `/` answers without a token",
    )
    # How long a server trusts a token it has checked; a revoked token is refused at most
    # this long after (0s: check the catalog on every request).
    token_cache_ttl: Duration = Field(
        default=timedelta(seconds=5),
        description=(
            "how long a server trusts a token it has checked: a revoked token is "
            'refused at most this long after `token revoke`; `"0s"` checks the '
            "catalog on every request"
        ),
    )
    tokens: tuple[TokenConfig, ...] = Field(
        default=(),
        description=(
            "bearer tokens declared in the file (besides those `shelflife token "
            "create` keeps in the catalog); a token here lasts until the server "
            "restarts without it"
        ),
    )


class MetricsConfig(_Strict):
    """What ``/metrics`` exports besides shelflife's own series."""

    compat: Literal["heimdall"] | None = Field(
        default=None,
        description=(
            "`\"heimdall\"` adds the MinIO clean-up's gauges beside shelflife's own: "
            "`heimdall_storage_{disk_usage_gb, bucket_size_gb, orphan_files, "
            "orphan_size_gb, total_objects, referenced_objects}` in GB with the label "
            "`bucket` (docs/migrating.md)"
        ),
    )


class SeedEnvironment(_Strict):
    """What the ``STORAGE_*`` environment said beyond the tiers (not read from a file)."""

    provider: str = Field(description="`STORAGE_PROVIDER`, `LOCAL` when unset")
    # Declared as references when the shelf opens, each if its table and column exist.
    candidate_references: tuple[ReferenceConfig, ...] = Field(
        default=(),
        description="the original services' columns, declared when they exist",
    )


NotifyEvent = Literal["run-finished", "run-failed", "run-refused", "health-changed", "plan-above"]
NOTIFY_EVENTS: tuple[str, ...] = (
    "run-finished",
    "run-failed",
    "run-refused",
    "health-changed",
    "plan-above",
)
PlanActionName = Literal["migrate", "expire", "delete-orphan", "quarantine"]
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class NotifyConfig(_Strict):
    """A webhook told of runs, health changes and large plans (``[[notify]]``): a JSON
    body POSTed to ``url``, retried with back-off on transient failures."""

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description=(
            "what logs, `check` and `notify test --name` call the target; "
            "`notify[INDEX]` when not set"
        ),
    )
    url: SecretStr = Field(
        description=(
            "where the JSON body is POSTed (`https://…` or `http://…`). A secret (a "
            "token in its query or path stays out of logs and output): `${VAR}` or "
            "`url_file`"
        ),
    )
    events: tuple[NotifyEvent, ...] | None = Field(
        default=None,
        description=(
            "which events are sent: `run-finished` (a run ended ok), `run-failed` "
            "(partial: some actions failed, or the run stopped on an error), "
            "`run-refused`, `health-changed`, `plan-above`; by default every run event "
            "and `health-changed`, and `plan-above` when a `plan_above_*` threshold is set"
        ),
    )
    plan_above_objects: int | None = Field(
        default=None,
        ge=0,
        description=(
            "`plan-above` is sent for a plan (a run's, a dry run's, `shelflife plan`'s) "
            "holding more than this many actions of `plan_above_actions`"
        ),
    )
    plan_above_bytes: Size | None = Field(
        default=None,
        description="or whose actions of `plan_above_actions` weigh more than this",
    )
    plan_above_actions: tuple[PlanActionName, ...] = Field(
        default=("migrate", "expire", "delete-orphan", "quarantine"),
        min_length=1,
        description=(
            "the actions the `plan_above_*` thresholds count: deletions (`expire`, "
            "`delete-orphan`, `quarantine`) and moves (`migrate`); every one by default"
        ),
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            'extra request headers (`{ Authorization = "Bearer ${HOOK_TOKEN}" }`); '
            "their values are secrets, never logged or shown"
        ),
    )
    timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="how long one attempt may wait for the receiver (at most 60s)",
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description=(
            "attempts after the first, with exponential back-off, on a dropped or "
            "refused connection, a timeout, 5xx or 429 (`Retry-After` honoured up to "
            "10s); never on other answers"
        ),
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        # Said without the value: it may hold a token.
        try:
            parts = urlsplit(url.get_secret_value())
        except ValueError:
            raise ValueError("is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("events")
    @classmethod
    def _some_events(cls, events: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if events is not None and not events:
            raise ValueError(f"name at least one event of {', '.join(NOTIFY_EVENTS)}")
        return events

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(c in value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"the value of {name} holds a line break")
        return headers

    @field_validator("timeout")
    @classmethod
    def _bounded_timeout(cls, timeout: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= timeout <= timedelta(seconds=60):
            raise ValueError("must be between 0.1s and 60s")
        return timeout

    @model_validator(mode="after")
    def _thresholds(self) -> NotifyConfig:
        threshold = self.plan_above_objects is not None or self.plan_above_bytes is not None
        if self.events is not None:
            if "plan-above" in self.events and not threshold:
                raise ValueError(
                    "'plan-above' needs plan_above_objects or plan_above_bytes (e.g. 1000)"
                )
            if threshold and "plan-above" not in self.events:
                raise ValueError(
                    "plan_above_objects/plan_above_bytes are set but 'plan-above' is not in "
                    "events; add it"
                )
        return self

    @property
    def wanted(self) -> tuple[str, ...]:
        """The events this target is sent."""
        if self.events is not None:
            return self.events
        above = self.plan_above_objects is not None or self.plan_above_bytes is not None
        return tuple(e for e in NOTIFY_EVENTS if e != "plan-above" or above)


class ActionLogConfig(_Strict):
    """The action log: every action runs take, skip or fail, kept in the catalog."""

    keep: Duration = Field(
        default=timedelta(days=90),
        description=(
            "how long an entry is kept: older ones are pruned at the end of each run "
            '(and by `shelflife log --prune`); `"0s"` keeps no log at all'
        ),
    )
    prune_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description=(
            "at most this long is spent pruning at the end of a run (in batches of "
            "10,000 entries); what is left goes at the next run"
        ),
    )


class Config(_Strict):
    """The whole validated configuration."""

    catalog: CatalogConfig = Field(
        default_factory=CatalogConfig,
        description="shelflife's own database",
    )
    databases: dict[str, DatabaseConfig] = Field(
        default_factory=dict,
        description="the application databases, by name",
    )
    tiers: dict[str, TierConfig] = Field(
        description=(
            "the stores, by name (at least one); writes go to `local` if it exists, else the first"
        ),
    )
    references: tuple[ReferenceConfig, ...] = Field(
        default=(),
        description="the columns whose values point at objects",
    )
    ignore_columns: tuple[IgnoredColumnConfig, ...] = Field(
        default=(),
        description="columns that look like references but are not",
    )
    rules: tuple[RuleConfig, ...] = Field(
        default=(),
        description="the lifecycle rules, applied in file order",
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description="when `shelflife daemon` and Celery beat run",
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig,
        description="the thresholds of `stats`' health",
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig,
        description="how runs carry out their actions",
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig,
        description="the HTTP API of `shelflife serve` and `shelflife daemon`",
    )
    celery: CeleryConfig = Field(
        default_factory=CeleryConfig,
        description="Celery workers and beat",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="extra series on `/metrics`",
    )
    notify: tuple[NotifyConfig, ...] = Field(
        default=(),
        description="webhooks told of runs, health changes and large plans",
    )
    action_log: ActionLogConfig = Field(
        default_factory=ActionLogConfig,
        description="the action log of `shelflife log` and `/api/v1/log`",
    )
    # Not from the file: where it came from, and what relative paths are relative to.
    source: str = Field(default="embedded default", exclude=True)
    base_dir: Path = Field(default=Path("."), exclude=True)
    environment: SeedEnvironment | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        if not self.tiers:
            raise ValueError("at least one tier is needed under [tiers]")
        for index, rule in enumerate(self.rules):
            where = f"rules[{index}] (id {rule.id!r})"
            if rule.tier != "*" and rule.tier not in self.tiers:
                raise ValueError(
                    f"{where}: unknown tier {rule.tier!r}; known: {sorted(self.tiers)}"
                )
            if rule.to is not None and rule.to not in self.tiers:
                raise ValueError(f"{where}: unknown tier {rule.to!r} in 'to'")
            if (
                rule.when == "over-watermark"
                and rule.tier != "*"
                and (self.tiers[rule.tier].capacity is None)
            ):
                raise ValueError(
                    f"{where}: tier {rule.tier!r} has no capacity, so it has no watermark; "
                    "set capacity (a size or 'disk') on the tier"
                )
        ids = [rule.id for rule in self.rules]
        duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
        if duplicates:
            raise ValueError(f"rule ids must be unique; repeated: {duplicates}")
        for index, ref in enumerate(self.references):
            if ref.database not in self.databases:
                raise ValueError(
                    f"references[{index}]: unknown database {ref.database!r}; "
                    f"declare it under [databases.{ref.database}]"
                )
        for index, ignored in enumerate(self.ignore_columns):
            if ignored.database not in self.databases:
                raise ValueError(
                    f"ignore_columns[{index}]: unknown database {ignored.database!r}; "
                    f"declare it under [databases.{ignored.database}]"
                )
        return self

    @model_validator(mode="after")
    def _notify_names(self) -> Config:
        names = [target.name for target in self.notify if target.name]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"notify names must be unique; repeated: {repeated}")
        return self

    @property
    def default_tier(self) -> str:
        """The tier writes go to unless told otherwise: 'local' if it exists, else the first."""
        return "local" if "local" in self.tiers else next(iter(self.tiers))
