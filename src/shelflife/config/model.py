"""Typed configuration: every value is parsed and checked here, once.

Library code receives these objects and never reads the environment or files itself.
Unknown keys are errors (``extra="forbid"``), so a typo never passes silently.
"""

from __future__ import annotations

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

    url: str = "sqlite:///data/shelflife.db"


class DatabaseConfig(_Strict):
    """An application database whose rows point at objects."""

    url: SecretStr


class TierConfig(_Strict):
    """A named store with a capacity, watermarks and the spelling rows use for it."""

    url: str
    ref_format: str = "{key}"
    ref_aliases: tuple[str, ...] = ()
    public_url: str | None = None
    capacity: Annotated[int | Literal["disk"] | None, BeforeValidator(_parse_capacity)] = None
    high_watermark: Ratio = 0.80
    low_watermark: Ratio = 0.70
    endpoint: str | None = None
    region: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    credentials_file: str | None = None
    virtual_hosted_style: bool = False
    allow_http: bool | None = None
    presign_ttl: Duration = timedelta(hours=1)
    upload_lease: Duration = timedelta(hours=1)
    storage_class: str | None = None
    versioned: bool | None = None  # None: ask the store (S3 buckets)
    multipart_threshold: Size = 8 * 1024 * 1024
    multipart_chunk_size: Size = 8 * 1024 * 1024
    verify: VerifyMethod = "checksum"
    # A file:// tier's folder must exist (a misspelled path fails instead of starting an
    # empty tier) unless the tier asks for it to be created.
    create: bool = False
    # A failed request is retried this many times by the HTTP client, and a failed
    # operation (a streamed read cut short, a copy) as many times by shelflife, with
    # exponential backoff; errors that cannot pass (404, 403, bad config) never are.
    retries: int = Field(default=3, ge=0, le=20)

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

    database: str
    table: str
    column: str
    where: str | None = None
    kind: ReferenceKind = "value"
    path: str | None = None
    on_expire: Literal["null", "delete-row", "block"] = "block"
    # Above this share of values that match no tier's spelling, the source cannot be
    # trusted: rules that remove objects from the tiers it covers are refused.
    max_unmatched: Ratio = 0.01

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

    database: str
    table: str
    column: str
    reason: str = Field(min_length=1)


AgeBasis = Literal["created", "modified", "last-access", "arrived"]
"""What a rule's age counts from: ``created`` (first seen or written anywhere, kept across
moves), ``modified`` (the bytes last changed), ``last-access`` (last read through
shelflife, else ``modified``), ``arrived`` (entered the tier it is on)."""


class RuleFilter(_Strict):
    prefix: str | None = None
    suffix: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    min_size: Size | None = None
    max_size: Size | None = None


class RuleConfig(_Strict):
    """One lifecycle rule; which fields apply depends on ``action``."""

    id: str
    tier: str
    action: Literal["migrate", "expire", "collect-orphans"]
    to: str | None = None
    when: Literal["over-watermark"] | None = None
    after: Duration | None = None
    order: Literal["oldest", "least-recently-used", "largest"] = "oldest"
    min_size: Size | None = None
    filter: RuleFilter = Field(default_factory=RuleFilter)
    grace: Duration = timedelta(days=30)
    mode: Literal["delete", "quarantine"] = "delete"
    quarantine_days: int = Field(default=7, ge=0)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_fraction: Ratio = 0.25
    enabled: bool = True
    age: AgeBasis | None = None
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
    timezone: str = "UTC"
    lifecycle: str | None = "0 3 * * *"
    stats: str | None = "0 * * * *"

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

    concurrency: int = Field(default=8, ge=1, le=256)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # Bytes a migration may hold in memory for objects sent whole: an object goes up in
    # one request when it is at most this divided by the transfers in flight (at least the
    # destination's multipart_threshold, at most 5000 MiB), in parts above that.
    transfer_memory: Size = 256 * 1024 * 1024
    # Deletions (expire, delete-orphan, quarantine) above either cap need --yes.
    max_delete: int = Field(default=10_000, ge=0)
    max_delete_bytes: Size | None = 1_000_000_000_000
    # A run stops itself once more than this fraction of the actions it tried failed.
    max_error_fraction: Ratio = 0.10
    # "local": this process takes every action; "celery": batches go to Celery workers.
    backend: Literal["local", "celery"] = "local"
    # With --no-scan, a tier scanned longer ago than this is planned on with a warning.
    stale_scan: Duration = timedelta(days=1)
    # How references are compared with the inventory: "auto" merges value columns read in
    # byte order with it (nothing copied) and copies the rest into the catalog for an
    # anti-join; "snapshot" always copies.
    marking: Literal["auto", "snapshot"] = "auto"

    @field_validator("transfer_memory")
    @classmethod
    def _room_for_a_part(cls, size: int) -> int:
        if size < 8 * 1024 * 1024:
            raise ValueError("must be at least 8MiB (a multipart part is held per transfer)")
        return size


class CeleryConfig(_Strict):
    """Celery for scheduled runs and fanned-out batches (``shelflife.celery``)."""

    broker_url: str = "redis://127.0.0.1:6379/0"  # or amqp://guest:guest@host:5672//
    result_backend: str | None = None  # None: the broker if Redis, else required
    queue: str = "shelflife"  # runs and stats
    batch_queue: str = "shelflife.batches"  # the batches of a fanned-out run
    visibility_timeout: Duration = timedelta(hours=1)  # Redis: redelivery of a lost task
    wave: int = Field(default=16, ge=1, le=10_000)  # batches in flight per error check

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
    orphan_warning: Ratio = 0.10
    orphan_critical: Ratio = 0.25
    usage_warning: Ratio = 0.80
    usage_critical: Ratio = 0.95


Scope = Literal["read", "write", "admin"]


class TokenConfig(_Strict):
    """A bearer token of the HTTP API, kept as its hash (``shelflife token create``)."""

    name: str = Field(min_length=1, max_length=128)
    hash: str
    scopes: tuple[Scope, ...] = ("read",)

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

    max_upload_size: Size = 5_000_000_000
    public_metrics: bool = True  # /metrics without a token (Prometheus scrapes it)
    public_dashboard: bool = True  # the page at / without a token
    # How long a server trusts a token it has checked; a revoked token is refused at most
    # this long after (0s: check the catalog on every request).
    token_cache_ttl: Duration = timedelta(seconds=5)
    tokens: tuple[TokenConfig, ...] = ()


class Config(_Strict):
    """The whole validated configuration."""

    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    databases: dict[str, DatabaseConfig] = Field(default_factory=dict)
    tiers: dict[str, TierConfig]
    references: tuple[ReferenceConfig, ...] = ()
    ignore_columns: tuple[IgnoredColumnConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    # Not from the file: where it came from, and what relative paths are relative to.
    source: str = Field(default="embedded default", exclude=True)
    base_dir: Path = Field(default=Path("."), exclude=True)

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

    @property
    def default_tier(self) -> str:
        """The tier writes go to unless told otherwise: 'local' if it exists, else the first."""
        return "local" if "local" in self.tiers else next(iter(self.tiers))
