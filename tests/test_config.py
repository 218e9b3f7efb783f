"""Configuration: discovery, substitution, secrets, compatibility, and refusals with paths."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from shelflife.config import load_config, parse_config
from shelflife.errors import ConfigError

BASE = """
[tiers.local]
url = "file://data/out"
"""


def parse(text: str, env: dict[str, str] | None = None, base: Path = Path("/srv/app")) -> Any:
    return parse_config(tomllib.loads(text), base_dir=base, source="test", env=env or {})


INVALID = [
    # (toml, the field path the error must name, a phrase of the reason)
    ("[tiers.local]\nurl = 'file://x'\ncapacity = 'lots'", "tiers.local.capacity", "not a size"),
    ("[tiers.local]\nurl = 'ftp://x'", "tiers.local.url", "no supported scheme"),
    (
        "[tiers.local]\nurl = 'file://x'\nhigh_watermark = '180%'",
        "tiers.local.high_watermark",
        "outside",
    ),
    ("[tiers.local]\nurl = 'file://x'\nlow_watermark = '90%'", "tiers.local", "above"),
    (
        "[tiers.local]\nurl = 'file://x'\nref_format = 'no/placeholder'",
        "tiers.local.ref_format",
        "exactly once",
    ),
    ("[tiers.local]\nurl = 'file://x'\nspeed = 'fast'", "tiers.local.speed", "unknown key"),
    ("[tiers.local]\nurl = 'file://x'\npresign_ttl = '30d'", "tiers.local.presign_ttl", "7d"),
    ("[tiers.cloud]\nurl = 's3://b'\ncapacity = 'disk'", "tiers.cloud", "file:// tiers only"),
    ("[tiers.local]\nurl = 'file://x'\n[catalogue]\nurl = 'x'", "catalogue", "unknown key"),
    (
        "[tiers.local]\nurl = 'file://x'\n[schedule]\nlifecycle = '61 * * * *'",
        "schedule.lifecycle",
        "cron",
    ),
    (
        "[tiers.local]\nurl = 'file://x'\n[schedule]\ntimezone = 'Mars/Base'",
        "schedule.timezone",
        "time zone",
    ),
    (
        BASE + "[[rules]]\nid='r'\ntier='local'\naction='migrate'\nwhen='over-watermark'",
        "rules[0] (id 'r')",
        "needs 'to'",
    ),
    (
        BASE + "[[rules]]\nid='r'\ntier='local'\naction='shred'",
        "rules[0] (id 'r').action",
        "migrate",
    ),
    (
        BASE + "[[rules]]\nid='r'\ntier='local'\naction='expire'",
        "rules[0] (id 'r')",
        "needs 'after'",
    ),
    (
        BASE + "[[rules]]\nid='r'\ntier='nowhere'\naction='expire'\nafter='1d'",
        "",
        "unknown tier 'nowhere'",
    ),
    (
        BASE + "[[rules]]\nid='r'\ntier='local'\naction='expire'\nafter='soon'",
        "rules[0] (id 'r').after",
        "not a duration",
    ),
    (
        BASE + "[[rules]]\nid='r'\ntier='local'\naction='collect-orphans'\nmax_fraction=2",
        "rules[0] (id 'r').max_fraction",
        "outside",
    ),
    (
        BASE + "[[references]]\ndatabase='app'\ntable='t'\ncolumn='c'",
        "",
        "declare it under [databases.app]",
    ),
    (
        BASE
        + "[[references]]\ndatabase='app'\ntable='t'\ncolumn='c'\non_expire='explode'\n[databases.app]\nurl='sqlite://'",
        "references[0].on_expire",
        "null",
    ),
    ("[catalog]\nurl = 'sqlite:///x.db'", "tiers", "required"),
    ("[tiers.c]\nurl = 's3://b'\nverify = 'readback'", "tiers.c.verify", "'read-back'"),
    (
        "[tiers.c]\nurl = 's3://b'\nstorage_class = 'GLACIER'\nverify = 'read-back'",
        "tiers.c",
        "cannot be read until restored",
    ),
    (
        "[tiers.c]\nurl = 'az://b'\nstorage_class = 'Archive'\nverify = 'read-back'",
        "tiers.c",
        "cannot be read until restored",
    ),
    (BASE + "[executor]\ntransfer_memory = '1MiB'", "executor.transfer_memory", "at least 8MiB"),
]


@pytest.mark.invariant("I7")
@pytest.mark.parametrize(("text", "path", "reason"), INVALID)
def test_invalid_config_names_the_field_and_why(text: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.path == path
    assert reason in caught.value.message
    assert caught.value.exit_code == 2


def test_sizes_ratios_and_durations_are_parsed_once() -> None:
    config = parse(
        "[tiers.local]\nurl = 'file://x'\ncapacity = '140GB'\nhigh_watermark = '85%'\n"
        "low_watermark = 0.6\npresign_ttl = '90m'\n"
        "[[rules]]\nid='e'\ntier='local'\naction='expire'\nafter='1d12h'\n"
    )
    tier = config.tiers["local"]
    assert tier.capacity == 140_000_000_000
    assert tier.high_watermark == 0.85
    assert tier.low_watermark == 0.6
    assert tier.presign_ttl == timedelta(minutes=90)
    assert config.rules[0].after == timedelta(days=1, hours=12)


def test_relative_paths_are_relative_to_the_config_folder() -> None:
    config = parse(
        "[catalog]\nurl='sqlite:///cat.db'\n[tiers.local]\nurl='file://data/out'\n"
        "[tiers.abs]\nurl='file:///var/abs'\n"
    )
    assert config.tiers["local"].url == "file:///srv/app/data/out"
    assert config.tiers["abs"].url == "file:///var/abs"
    assert config.catalog.url == "sqlite:////srv/app/cat.db"


def test_environment_variables_are_substituted() -> None:
    config = parse(
        "[tiers.cloud]\nurl='s3://${BUCKET}/p'\naccess_key='${KEY}'\nregion='${REGION:-eu-west-1}'",
        env={"BUCKET": "media", "KEY": "AKIA123"},
    )
    cloud = config.tiers["cloud"]
    assert cloud.url == "s3://media/p"
    assert cloud.access_key is not None
    assert cloud.access_key.get_secret_value() == "AKIA123"
    assert cloud.region == "eu-west-1"


def test_a_missing_environment_variable_is_an_error_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("[tiers.cloud]\nurl='s3://b/p'\nsecret_key='${NOT_SET}'")
    assert caught.value.path == "tiers.cloud.secret_key"
    assert "NOT_SET" in caught.value.message


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t\n")
    config = parse("[tiers.cloud]\nurl='s3://b/p'\nsecret_key_file='secret'", base=tmp_path)
    secret = config.tiers["cloud"].secret_key
    assert secret is not None
    assert secret.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(config)
    with pytest.raises(ConfigError) as caught:
        parse(
            "[tiers.cloud]\nurl='s3://b/p'\nsecret_key='x'\nsecret_key_file='secret'", base=tmp_path
        )
    assert caught.value.path == "tiers.cloud.secret_key_file"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        parse("[tiers.cloud]\nurl='s3://b/p'\nsecret_key_file='absent'", base=tmp_path)


def test_discovery_order(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[tiers.explicit]\nurl='file://e'\n")
    from_env = tmp_path / "env.toml"
    from_env.write_text("[tiers.env]\nurl='file://e'\n")
    (tmp_path / "shelflife.toml").write_text("[tiers.cwd]\nurl='file://e'\n")
    env = {"SHELFLIFE_CONFIG": str(from_env)}
    assert list(load_config(explicit, env=env, cwd=tmp_path).tiers) == ["explicit"]
    assert list(load_config(None, env=env, cwd=tmp_path).tiers) == ["env"]
    assert list(load_config(None, env={}, cwd=tmp_path).tiers) == ["cwd"]
    empty = tmp_path / "empty"
    empty.mkdir()
    default = load_config(None, env={}, cwd=empty)
    assert default.source == "embedded default"
    assert list(default.tiers) == ["local", "cloud"]
    assert default.tiers["local"].url == f"file://{empty}/data/storage/outputs"
    assert default.tiers["local"].capacity == "disk"
    assert [rule.action for rule in default.rules] == ["migrate"]


@pytest.mark.invariant("I3")
def test_embedded_default_carries_no_rule_that_deletes(tmp_path: Path) -> None:
    default = load_config(None, env={}, cwd=tmp_path)
    assert all(rule.action == "migrate" for rule in default.rules)
    rule = default.rules[0]
    assert (rule.tier, rule.to, rule.when) == ("local", "cloud", "over-watermark")
    assert (default.tiers["local"].high_watermark, default.tiers["local"].low_watermark) == (
        0.8,
        0.7,
    )


@pytest.mark.invariant("I7")
def test_unreadable_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[tiers.local\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})


@pytest.mark.parametrize(
    ("env", "url", "extra"),
    [
        ({"STORAGE_PROVIDER": "LOCAL"}, "file://{cwd}/data/storage/cold", {}),
        (
            {"STORAGE_PROVIDER": "AWS", "STORAGE_BUCKET": "b", "STORAGE_REGION": "eu-west-1"},
            "s3://b/outputs",
            {"region": "eu-west-1"},
        ),
        (
            {
                "STORAGE_PROVIDER": "CUSTOM",
                "STORAGE_BUCKET": "b",
                "STORAGE_ENDPOINT": "http://minio:9000",
            },
            "s3://b/outputs",
            {"endpoint": "http://minio:9000"},
        ),
        (
            {
                "STORAGE_PROVIDER": "OCI",
                "STORAGE_BUCKET": "b",
                "STORAGE_ENDPOINT": "https://ns.compat.oci",
            },
            "s3://b/outputs",
            {"endpoint": "https://ns.compat.oci"},
        ),
        (
            {"STORAGE_PROVIDER": "GCP", "STORAGE_BUCKET": "b"},
            "s3://b/outputs",
            {"endpoint": "https://storage.googleapis.com"},
        ),
        (
            {"STORAGE_PROVIDER": "AZURE", "STORAGE_BUCKET": "c", "STORAGE_ACCESS_KEY": "acct"},
            "az://c/outputs",
            {},
        ),
    ],
)
def test_seed_environment_builds_local_and_cloud_tiers(
    env: dict[str, str], url: str, extra: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "STORAGE_OUTPUT_DIR": "/data/outputs"}
    config = load_config(None, env=env, cwd=tmp_path)
    local, cloud = config.tiers["local"], config.tiers["cloud"]
    assert local.url == "file:///data/outputs"
    assert local.ref_format == "/data/outputs/{key}"
    assert local.capacity == 140_000_000_000
    assert (local.high_watermark, local.low_watermark) == (0.8, 0.7)
    assert cloud.url == url.format(cwd=tmp_path)
    for field, value in extra.items():
        assert getattr(cloud, field) == value
    assert [(r.tier, r.action, r.to) for r in config.rules] == [("local", "migrate", "cloud")]


def test_seed_environment_refuses_what_it_cannot_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown STORAGE_PROVIDER"):
        load_config(None, env={"STORAGE_PROVIDER": "DROPBOX"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="needs STORAGE_ENDPOINT"):
        load_config(None, env={"STORAGE_PROVIDER": "CUSTOM", "STORAGE_BUCKET": "b"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="needs STORAGE_BUCKET"):
        load_config(None, env={"STORAGE_PROVIDER": "AWS"}, cwd=tmp_path)


def test_the_starter_file_from_init_is_valid() -> None:
    text = resources.files("shelflife").joinpath("templates/shelflife.toml").read_text()
    config = parse(text)
    assert set(config.tiers) == {"local", "cloud"}
