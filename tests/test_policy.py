"""Native lifecycle export/import, storage classes and versioned buckets (moto's S3 server)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.config import parse_config
from shelflife.errors import ConfigError
from shelflife.service import records
from shelflife.service.policy import export_policy, import_policy
from shelflife.service.records import current_stats
from tests.support.cli import shelflife
from tests.support.servers import make_s3_bucket, s3_client, s3_tier

pytestmark = pytest.mark.s3

RULES: list[dict[str, Any]] = [
    {
        "id": "tmp-retention",
        "tier": "cloud",
        "action": "expire",
        "after": "30d",
        "filter": {"prefix": "tmp/", "tags": {"kind": "scratch"}, "min_size": "1KB"},
    },
    {"id": "to-archive", "tier": "cloud", "action": "migrate", "to": "archive", "after": "90d"},
    {"id": "orphans", "tier": "*", "action": "collect-orphans"},
    {
        "id": "odd",
        "tier": "cloud",
        "action": "expire",
        "after": "36h",
        "filter": {"max_size": "1MB"},
    },
    {"id": "mp4", "tier": "cloud", "action": "expire", "after": "1d", "filter": {"suffix": ".mp4"}},
    {"id": "unread", "tier": "cloud", "action": "expire", "after": "60d", "age": "last-access"},
]


def config(endpoint: str, bucket: str, *, references: bool = False, **cloud: Any) -> Any:
    raw = raw_config(endpoint, bucket, **cloud)
    if references:
        raw["databases"] = {"app": {"url": "sqlite:///app.db"}}
        raw["references"] = [{"database": "app", "table": "jobs", "column": "path"}]
    return parse_config(raw, base_dir=Path("/tmp"), source="test", env={})


def raw_config(endpoint: str, bucket: str, **cloud: Any) -> dict[str, Any]:
    return {
        "catalog": {"url": "sqlite:///catalog.db"},
        "tiers": {
            "cloud": s3_tier(endpoint, bucket, "outputs", **cloud),
            "archive": s3_tier(endpoint, bucket, "outputs", storage_class="GLACIER_IR"),
        },
        "rules": RULES,
    }


def client(endpoint: str) -> Any:
    return s3_client(endpoint)


def test_export_says_what_a_bucket_can_do_and_why_not_the_rest(s3_endpoint: str) -> None:
    result = export_policy(config(s3_endpoint, "bucket"), "cloud", versioned=False)
    by_id = {rule["ID"]: rule for rule in result.document["Rules"]}
    assert by_id["shelflife-tmp-retention"] == {
        "ID": "shelflife-tmp-retention",
        "Status": "Enabled",
        "Filter": {
            "And": {
                "Prefix": "outputs/tmp/",
                "Tags": [{"Key": "kind", "Value": "scratch"}],
                "ObjectSizeGreaterThan": 999,
            }
        },
        "Expiration": {"Days": 30},
    }
    assert by_id["shelflife-to-archive"]["Transitions"] == [
        {"Days": 90, "StorageClass": "GLACIER_IR"}
    ]
    assert by_id["shelflife-odd"]["Expiration"] == {"Days": 2}  # 36h rounds up, never earlier
    assert any("rounded up" in note for note in result.notes)
    assert by_id["shelflife-abort-incomplete-multipart"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    assert "shelflife-noncurrent-versions" not in by_id  # the bucket keeps no versions
    assert set(result.not_exported) == {"orphans", "mp4", "unread"}
    assert "database" in result.not_exported["orphans"]
    assert "suffix" in result.not_exported["mp4"]
    assert "last access" in result.not_exported["unread"]  # the bucket would act earlier
    # The bucket counts from each object's write; a rule counting from creation is said so.
    assert any("'tmp-retention'" in note and "'created'" in note for note in result.notes)

    with_refs = export_policy(config(s3_endpoint, "b", references=True), "cloud", versioned=True)
    assert "on_expire" in with_refs.not_exported["tmp-retention"]
    noncurrent = {r["ID"]: r for r in with_refs.document["Rules"]}["shelflife-noncurrent-versions"]
    assert noncurrent["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert noncurrent["Expiration"] == {"ExpiredObjectDeleteMarker": True}


def test_export_import_round_trip(s3_endpoint: str) -> None:
    cfg = config(s3_endpoint, "bucket")
    exported = export_policy(cfg, "cloud", versioned=True)
    imported = import_policy(exported.document, cfg, "cloud")
    by_id = {rule["id"]: rule for rule in imported.rules}
    assert by_id["tmp-retention"] == {
        "id": "tmp-retention",
        "tier": "cloud",
        "action": "expire",
        "after": "30d",
        "filter": {"prefix": "tmp/", "tags": {"kind": "scratch"}, "min_size": "1000B"},
    }
    assert by_id["to-archive"] == {
        "id": "to-archive",
        "tier": "cloud",
        "action": "migrate",
        "to": "archive",
        "after": "90d",
    }
    # the imported rules are valid shelflife rules equal to the originals
    original = {rule.id: rule for rule in cfg.rules}
    raw = raw_config(s3_endpoint, "bucket")
    raw["rules"] = imported.rules
    reparsed = parse_config(raw, base_dir=Path("/tmp"), source="import", env={})
    for rule in reparsed.rules:
        if rule.id in ("tmp-retention", "to-archive"):
            assert rule == original[rule.id]
    assert set(imported.not_imported) == {
        "shelflife-abort-incomplete-multipart",
        "shelflife-noncurrent-versions",
    }
    text = imported.as_toml()
    assert "[[rules]]" in text
    assert 'id = "tmp-retention"' in text


def test_import_refuses_what_is_not_a_lifecycle_document() -> None:
    from shelflife.errors import UsageError

    with pytest.raises(UsageError, match="no 'Rules' list"):
        import_policy({"rules": []}, None)
    result = import_policy(
        {
            "Rules": [
                {"ID": "x", "Status": "Enabled", "Filter": {"Weird": 1}, "Expiration": {"Days": 3}}
            ]
        },
        None,
    )
    assert result.rules == []
    assert "unsupported filter" in result.not_imported["x"]


def test_export_applied_to_the_bucket_keeps_foreign_rules(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    s3 = client(s3_endpoint)
    foreign = {
        "ID": "team-logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 5},
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]}
    )
    tiers = "\n".join(
        f'[tiers.{name}]\nurl = "s3://{bucket}/outputs"\nendpoint = "{s3_endpoint}"\n'
        f'access_key = "testing"\nsecret_key = "testing"\nregion = "us-east-1"\n{extra}'
        for name, extra in (("cloud", ""), ("archive", 'storage_class = "GLACIER_IR"\n'))
    )
    (tmp_path / "shelflife.toml").write_text(f"""
{tiers}
[[rules]]
id = "retention"
tier = "cloud"
action = "expire"
after = "30d"
""")
    result = shelflife("policy", "export", "--tier", "cloud", "--apply", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["kept_rules"] == ["team-logs"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    ids = sorted(rule["ID"] for rule in rules)
    assert ids == ["shelflife-abort-incomplete-multipart", "shelflife-retention", "team-logs"]
    retention = next(rule for rule in rules if rule["ID"] == "shelflife-retention")
    assert retention["Expiration"] == {"Days": 30}
    assert retention["Filter"] == {"Prefix": "outputs/"}

    exported = tmp_path / "lifecycle.json"
    exported.write_text(json.dumps({"Rules": rules}, default=str))
    imported = shelflife("policy", "import", str(exported), "--tier", "cloud", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert 'id = "retention"' in imported.stdout
    assert 'after = "30d"' in imported.stdout
    # team-logs' prefix lies outside the tier: it is reported, not imported
    assert 'id = "team-logs"' not in imported.stdout
    assert "# not imported: team-logs" in imported.stdout

    local = shelflife("policy", "export", "--tier", "nope", cwd=tmp_path)
    assert local.returncode == 2

    # once the bucket keeps versions, the export frees noncurrent ones too
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    again = shelflife("policy", "export", "--tier", "cloud", "--apply", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "keeps versions" in again.stderr
    ids = sorted(r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"])
    assert "shelflife-noncurrent-versions" in ids
    assert "team-logs" in ids


def test_storage_class_is_applied_on_write(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "tiers": {
            "local": {"create": True, "url": f"file://{tmp_path / 'out'}"},
            "archive": s3_tier(s3_endpoint, bucket, "arch", storage_class="STANDARD_IA"),
        },
    }
    shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="t", env={}))
    shelf.put(b"bytes", "a.bin", tier="archive")
    shelf.put(b"x" * (9 * 1024 * 1024), "big.bin", tier="archive")  # multipart
    shelf.put(b"local", "b.bin")
    shelf.recall("b.bin", to="archive")  # a migration writes with the class too
    s3 = client(s3_endpoint)
    for key in ("a.bin", "big.bin", "b.bin"):
        head = s3.head_object(Bucket=bucket, Key=f"arch/{key}")
        assert head.get("StorageClass") == "STANDARD_IA", key


def test_storage_class_is_validated() -> None:
    with pytest.raises(ConfigError, match="not one of"):
        parse_config(
            {"tiers": {"a": {"url": "s3://b/p", "storage_class": "COLD-ISH"}}},
            base_dir=Path("/tmp"),
            source="t",
            env={},
        )
    with pytest.raises(ConfigError, match="s3:// and az://"):
        parse_config(
            {"tiers": {"a": {"create": True, "url": "file:///tmp/x", "storage_class": "STANDARD"}}},
            base_dir=Path("/tmp"),
            source="t",
            env={},
        )


def test_versioned_bucket_is_said_in_plan_and_stats(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    s3 = client(s3_endpoint)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "tiers": {"cloud": s3_tier(s3_endpoint, bucket, "v")},
        "rules": [{"id": "ret", "tier": "cloud", "action": "expire", "after": "0s"}],
    }
    shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="t", env={}))
    shelf.put(b"one", "a.bin", tier="cloud")
    shelf.put(b"two!", "a.bin", tier="cloud")  # the first write is now a noncurrent version
    shelf.ledger.purge_expired_leases(shelf_now_plus_days(2))
    assert shelf.versioned("cloud")

    plan = shelf.plan()
    assert [a.key for a in plan.actions] == ["a.bin"]
    assert any("delete marker" in note for note in plan.notes)
    stats = shelf.stats()["tiers"]["cloud"]
    assert stats["versioned"] is True
    assert stats["noncurrent_objects"] == 1
    assert stats["noncurrent_bytes"] == 3

    outcome = shelf.apply(plan)
    assert [a.key for a in outcome.actions] == ["a.bin"]
    after = shelf.stats()["tiers"]["cloud"]
    assert after["objects"] == 0
    assert after["noncurrent_bytes"] == 7  # the delete freed nothing until the bucket expires it
    stored = current_stats(shelf.context)[1]["tiers"]["cloud"]
    assert stored["noncurrent_bytes"] == 7  # the run deleted from the tier: asked again

    # A run that touches nothing on the tier keeps the figures the last stats had.
    s3.put_object(Bucket=bucket, Key="v/other.bin", Body=b"12345")
    s3.delete_object(Bucket=bucket, Key="v/other.bin")
    outcome = shelf.apply(shelf.plan())
    assert outcome.actions == []
    stored = current_stats(shelf.context)[1]["tiers"]["cloud"]
    assert stored["versioned"] is True
    assert stored["noncurrent_bytes"] == 7  # not asked: the bucket now says 12
    assert shelf.stats()["tiers"]["cloud"]["noncurrent_bytes"] == 12  # stats ask every tier

    # Carried figures stand for a limited time only: past it, a run asks again.
    monkeypatch.setattr(records, "CARRIED_FOR", timedelta(0))
    assert shelf.apply(shelf.plan()).actions == []
    assert current_stats(shelf.context)[1]["tiers"]["cloud"]["noncurrent_bytes"] == 12

    # A failed or recovering run asks every tier, carried figures or not.
    monkeypatch.setattr(records, "CARRIED_FOR", timedelta(hours=1))
    s3.put_object(Bucket=bucket, Key="v/third.bin", Body=b"123")
    s3.delete_object(Bucket=bucket, Key="v/third.bin")
    assert shelf.apply(shelf.plan()).actions == []
    assert current_stats(shelf.context)[1]["tiers"]["cloud"]["noncurrent_bytes"] == 12
    records.finish_run(shelf.context, "run-failed", "run", "failed", error="boom")
    assert current_stats(shelf.context)[1]["tiers"]["cloud"]["noncurrent_bytes"] == 15
    s3.put_object(Bucket=bucket, Key="v/fourth.bin", Body=b"1")
    s3.delete_object(Bucket=bucket, Key="v/fourth.bin")
    records.finish_run(shelf.context, "run-recovered", "run", "ok", recovered=True)
    assert current_stats(shelf.context)[1]["tiers"]["cloud"]["noncurrent_bytes"] == 16


def shelf_now_plus_days(days: int) -> Any:
    from datetime import timedelta

    from shelflife.base.units import utcnow

    return utcnow() + timedelta(days=days)


@pytest.mark.azure
def test_azure_access_tier_is_applied_on_write(azure_endpoint: str, tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    from tests.support.servers import AZURE_ACCOUNT, AZURE_KEY, azure_tier, make_azure_container

    container = make_azure_container(azure_endpoint)
    tier = {**azure_tier(azure_endpoint, container), "storage_class": "Cool"}
    raw = {"catalog": {"url": f"sqlite:///{tmp_path / 'c.db'}"}, "tiers": {"archive": tier}}
    shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="t", env={}))
    shelf.put(b"cool bytes", "a.bin", tier="archive")
    service = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
        f"BlobEndpoint={azure_endpoint};"
    )
    properties = service.get_blob_client(container, "pre/a.bin").get_blob_properties()
    assert properties.blob_tier == "Cool"
    assert not properties.blob_tier_inferred
