"""Native lifecycle policies: the part of the rules a bucket can enforce by itself.

``export_policy`` turns the rules covering an S3 tier into an S3 lifecycle configuration
(the JSON ``put-bucket-lifecycle-configuration`` takes): age expiration and same-bucket
storage-class transitions with prefix, tag and size filters, plus aborting incomplete
multipart uploads and, so that deletes on a versioned bucket really free space,
``NoncurrentVersionExpiration`` and ``ExpiredObjectDeleteMarker``. Rules that need the
database (orphan collection; expiration while references are declared; migration to
another store, which rewrites rows) cannot be exported and are listed with the reason.

``import_policy`` reads such a document back into shelflife rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shelflife.config.model import Config, RuleConfig, TierConfig
from shelflife.errors import ShelflifeError, StoreError, UsageError
from shelflife.model.selection import rule_tiers
from shelflife.stores._obstore import split_bucket_url
from shelflife.stores.s3 import s3_client

ID_PREFIX = "shelflife-"
DAY = timedelta(days=1)


@dataclass
class Export:
    tier: str
    bucket: str
    document: dict[str, Any]
    exported: list[str] = field(default_factory=list)
    not_exported: dict[str, str] = field(default_factory=dict)  # rule id → reason
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "bucket": self.bucket,
            "lifecycle": self.document,
            "exported": self.exported,
            "not_exported": self.not_exported,
            "notes": self.notes,
        }


@dataclass
class Import:
    rules: list[dict[str, Any]] = field(default_factory=list)
    not_imported: dict[str, str] = field(default_factory=dict)  # S3 rule id → reason

    def as_json(self) -> dict[str, Any]:
        return {"rules": self.rules, "not_imported": self.not_imported}

    def as_toml(self) -> str:
        import tomli_w

        lines = []
        for rule_id, reason in self.not_imported.items():
            lines.append(f"# not imported: {rule_id}: {reason}")
        body = tomli_w.dumps({"rules": self.rules}) if self.rules else ""
        return "\n".join(lines) + ("\n\n" if lines and body else "") + body


def _days(span: timedelta) -> tuple[int, bool]:
    """Whole days, rounded up (a store never acts earlier than the rule); and whether
    rounding was needed."""
    days = max(1, math.ceil(span / DAY))
    return days, span != days * DAY


def _s3_filter(tier_prefix: str, rule: RuleConfig) -> dict[str, Any]:
    prefix = (tier_prefix + "/" if tier_prefix else "") + (rule.filter.prefix or "")
    conditions: dict[str, Any] = {}
    if prefix:
        conditions["Prefix"] = prefix
    tags = [{"Key": k, "Value": v} for k, v in sorted(rule.filter.tags.items())]
    if tags:
        conditions["Tags"] = tags
    min_size = rule.filter.min_size if rule.min_size is None else rule.min_size
    if min_size:
        conditions["ObjectSizeGreaterThan"] = min_size - 1
    if rule.filter.max_size is not None:
        conditions["ObjectSizeLessThan"] = rule.filter.max_size + 1
    if not conditions:
        return {"Prefix": ""}
    if len(conditions) == 1 and "Tags" not in conditions:
        return conditions
    if len(conditions) == 1:
        return {"Tag": tags[0]} if len(tags) == 1 else {"And": {"Tags": tags}}
    return {"And": conditions}


def export_policy(
    config: Config,
    tier: str,
    *,
    versioned: bool | None = None,
    abort_multipart_days: int = 7,
    noncurrent_days: int = 7,
) -> Export:
    """The S3 lifecycle configuration for ``tier`` (an ``s3://`` tier)."""
    if tier not in config.tiers:
        raise UsageError(f"unknown tier {tier!r}", hint=f"known tiers: {', '.join(config.tiers)}")
    tier_config = config.tiers[tier]
    if tier_config.scheme != "s3":
        raise UsageError(
            f"tier {tier} is {tier_config.scheme}://; lifecycle export covers s3:// tiers",
            hint="Azure and GCS lifecycle policies are not exported yet",
        )
    bucket, tier_prefix = split_bucket_url(tier_config.url)
    result = Export(tier, bucket, {"Rules": []})
    rules: list[dict[str, Any]] = result.document["Rules"]
    for rule in config.rules:
        if not rule.enabled or tier not in rule_tiers(rule, list(config.tiers)):
            continue
        reason = _why_not(config, tier_config, rule)
        if reason:
            result.not_exported[rule.id] = reason
            continue
        assert rule.after is not None
        days, rounded = _days(rule.after)
        if rounded:
            result.notes.append(f"rule {rule.id!r}: {rule.after} rounded up to {days} days")
        if rule.age_basis != "arrived":
            result.notes.append(
                f"rule {rule.id!r}: shelflife counts its age from {rule.age_basis!r}, the "
                "bucket from when each object was written to it: for objects moved in it "
                "acts later than shelflife would, never earlier"
            )
        body: dict[str, Any] = {
            "ID": (ID_PREFIX + rule.id)[:255],
            "Status": "Enabled",
            "Filter": _s3_filter(tier_prefix, rule),
        }
        if rule.action == "expire":
            body["Expiration"] = {"Days": days}
        else:
            assert rule.to is not None
            body["Transitions"] = [
                {"Days": days, "StorageClass": config.tiers[rule.to].storage_class}
            ]
        rules.append(body)
        result.exported.append(rule.id)
    scope = {"Prefix": tier_prefix + "/"} if tier_prefix else {"Prefix": ""}
    rules.append(
        {
            "ID": ID_PREFIX + "abort-incomplete-multipart",
            "Status": "Enabled",
            "Filter": scope,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_multipart_days},
        }
    )
    if versioned is not False:
        rules.append(
            {
                "ID": ID_PREFIX + "noncurrent-versions",
                "Status": "Enabled",
                "Filter": scope,
                "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
                "Expiration": {"ExpiredObjectDeleteMarker": True},
            }
        )
        if versioned:
            result.notes.append(
                f"bucket {bucket} keeps versions: a delete only adds a delete marker; "
                f"noncurrent versions expire after {noncurrent_days} days"
            )
    return result


def _why_not(config: Config, tier: TierConfig, rule: RuleConfig) -> str | None:
    if rule.action == "collect-orphans":
        return "orphan collection needs the database to know what is referenced"
    if rule.when == "over-watermark":
        return "watermarks depend on usage, which a bucket's lifecycle cannot see"
    if rule.age_basis == "last-access":
        # Counted from the write instead, the bucket would act before the rule does.
        return "a bucket's lifecycle cannot see reads, so it cannot count from the last access"
    if rule.filter.suffix:
        return "S3 lifecycle filters cannot match a suffix"
    if rule.action == "expire" and config.references:
        return (
            "expiration must apply on_expire to the rows that point at objects "
            "(references are declared)"
        )
    if rule.action == "migrate":
        assert rule.to is not None
        target = config.tiers[rule.to]
        if target.url.rstrip("/") != tier.url.rstrip("/") or not target.storage_class:
            return (
                f"moving to tier {rule.to} changes the object's location and rewrites rows; "
                "only a storage-class change within the same bucket and prefix is exportable"
            )
    return None


def import_policy(document: dict[str, Any], config: Config | None, tier: str = "*") -> Import:
    """Shelflife rules for an S3 lifecycle document's expirations and transitions."""
    rules = document.get("Rules")
    if not isinstance(rules, list):
        raise UsageError(
            "not an S3 lifecycle configuration: no 'Rules' list",
            hint="give the JSON that 'aws s3api get-bucket-lifecycle-configuration' prints",
        )
    prefix = ""
    if config is not None and tier != "*":
        if tier not in config.tiers:
            raise UsageError(f"unknown tier {tier!r}")
        if config.tiers[tier].scheme == "s3":
            prefix = split_bucket_url(config.tiers[tier].url)[1]
    result = Import()
    for index, item in enumerate(rules):
        s3_id = str(item.get("ID") or f"rule-{index + 1}")
        rule_id = s3_id.removeprefix(ID_PREFIX)
        if item.get("Status", "Enabled") != "Enabled":
            result.not_imported[s3_id] = "disabled"
            continue
        try:
            selection = _filter_from_s3(item.get("Filter", {"Prefix": item.get("Prefix", "")}))
        except ShelflifeError as exc:
            result.not_imported[s3_id] = exc.message
            continue
        if prefix and "prefix" in selection:
            base = prefix + "/"
            if not str(selection["prefix"]).startswith(base):
                result.not_imported[s3_id] = f"its prefix is outside tier {tier}'s {base}"
                continue
            selection["prefix"] = str(selection["prefix"])[len(base) :]
            if not selection["prefix"]:
                del selection["prefix"]
        expiration = item.get("Expiration") or {}
        transitions = item.get("Transitions") or []
        if "Days" in expiration:
            rule: dict[str, Any] = {
                "id": rule_id,
                "tier": tier,
                "action": "expire",
                "after": f"{int(expiration['Days'])}d",
            }
            if selection:
                rule["filter"] = selection
            result.rules.append(rule)
        for number, transition in enumerate(transitions):
            target = _tier_with_class(config, str(transition.get("StorageClass")))
            if target is None or "Days" not in transition:
                result.not_imported[f"{s3_id} transition {number + 1}"] = (
                    f"no tier has storage_class {transition.get('StorageClass')!r}"
                    if target is None
                    else "only Days transitions are imported"
                )
                continue
            rule = {
                "id": rule_id
                if len(transitions) == 1 and "Days" not in expiration
                else f"{rule_id}-to-{target}",
                "tier": tier,
                "action": "migrate",
                "to": target,
                "after": f"{int(transition['Days'])}d",
            }
            if selection:
                rule["filter"] = selection
            result.rules.append(rule)
        left = [
            name
            for name in (
                "AbortIncompleteMultipartUpload",
                "NoncurrentVersionExpiration",
                "NoncurrentVersionTransitions",
            )
            if name in item
        ]
        if "Date" in expiration:
            left.append("Expiration.Date")
        if expiration.get("ExpiredObjectDeleteMarker"):
            left.append("ExpiredObjectDeleteMarker")
        if left and "Days" not in expiration and not transitions:
            result.not_imported[s3_id] = (
                ", ".join(left) + " stay with the store (shelflife has no such rule)"
            )
    return result


def _filter_from_s3(body: dict[str, Any]) -> dict[str, Any]:
    conditions = dict(body.get("And") or body)
    selection: dict[str, Any] = {}
    if conditions.get("Prefix"):
        selection["prefix"] = str(conditions["Prefix"])
    tags = list(conditions.get("Tags") or [])
    if "Tag" in conditions:
        tags.append(conditions["Tag"])
    if tags:
        selection["tags"] = {str(t["Key"]): str(t["Value"]) for t in tags}
    if "ObjectSizeGreaterThan" in conditions:
        selection["min_size"] = f"{int(conditions['ObjectSizeGreaterThan']) + 1}B"
    if "ObjectSizeLessThan" in conditions:
        selection["max_size"] = f"{int(conditions['ObjectSizeLessThan']) - 1}B"
    unknown = set(conditions) - {
        "Prefix",
        "Tags",
        "Tag",
        "ObjectSizeGreaterThan",
        "ObjectSizeLessThan",
    }
    if unknown:
        raise ShelflifeError(f"unsupported filter fields {sorted(unknown)}")
    return selection


def _tier_with_class(config: Config | None, storage_class: str) -> str | None:
    if config is None:
        return None
    for name, tier in config.tiers.items():
        if tier.storage_class == storage_class:
            return name
    return None


# -- the bucket ----------------------------------------------------------------------------


def _bucket_call(tier: TierConfig, what: str, call: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise StoreError(
            f"{tier.url}: cannot {what}: {code or exc}",
            hint="the credentials need s3:GetLifecycleConfiguration, "
            "s3:PutLifecycleConfiguration and s3:GetBucketVersioning on the bucket",
        ) from None
    except BotoCoreError as exc:
        raise StoreError(f"{tier.url}: cannot {what}: {exc}") from None


def apply_policy(tier: TierConfig, export: Export) -> list[str]:
    """Put the exported rules on the bucket, keeping every rule shelflife did not write.
    Returns the ids of the rules kept."""
    from botocore.exceptions import ClientError

    client = s3_client(tier)
    try:
        current = client.get_bucket_lifecycle_configuration(Bucket=export.bucket)["Rules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise StoreError(
                f"{tier.url}: cannot read the lifecycle configuration: {exc}"
            ) from None
        current = []
    kept = [rule for rule in current if not str(rule.get("ID", "")).startswith(ID_PREFIX)]
    document = {"Rules": kept + export.document["Rules"]}
    _bucket_call(
        tier,
        "put the lifecycle configuration",
        lambda: client.put_bucket_lifecycle_configuration(
            Bucket=export.bucket, LifecycleConfiguration=document
        ),
    )
    return [str(rule.get("ID")) for rule in kept]


def read_policy(tier: TierConfig) -> dict[str, Any]:
    bucket, _ = split_bucket_url(tier.url)
    client = s3_client(tier)
    body = _bucket_call(
        tier,
        "read the lifecycle configuration",
        lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket),
    )
    return {"Rules": body["Rules"]}


def bucket_versioned(tier: TierConfig) -> bool:
    """Whether the tier's bucket keeps versions (enabled or suspended)."""
    bucket, _ = split_bucket_url(tier.url)
    client = s3_client(tier)
    body = _bucket_call(
        tier, "read the versioning state", lambda: client.get_bucket_versioning(Bucket=bucket)
    )
    return body.get("Status") in ("Enabled", "Suspended")


def noncurrent_bytes(tier: TierConfig) -> tuple[int, int]:
    """Noncurrent versions and their bytes under the tier's prefix (delete markers count 0)."""
    bucket, prefix = split_bucket_url(tier.url)
    client = s3_client(tier)
    count = size = 0

    def walk() -> None:
        nonlocal count, size
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
            for version in page.get("Versions", []):
                if not version.get("IsLatest"):
                    count += 1
                    size += int(version.get("Size", 0))

    _bucket_call(tier, "list object versions", walk)
    return count, size
