"""The ``shelflife`` command as a user runs it: a subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.cli import SHELFLIFE, shelflife
from tests.support.servers import free_port, make_s3_bucket


def test_demo_builds_an_app_and_shows_it(tmp_path: Path) -> None:
    result = shelflife("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "40 rows" in result.stderr
    assert "scanned local: 48 objects" in result.stdout
    config = tmp_path / "demo" / "shelflife.toml"
    stats = json.loads(shelflife("-c", str(config), "stats", "--json", cwd=tmp_path).stdout)
    local = stats["tiers"]["local"]
    cloud = stats["tiers"]["cloud"]
    expired = int(result.stdout.split("expire: ")[1].split(" objects")[0])
    quarantined = int(result.stdout.split("quarantine: ")[1].split(" objects")[0])
    moved = int(result.stdout.split("migrate: ")[1].split(" objects")[0])
    assert min(expired, quarantined, moved) > 0  # all three kinds of action ran
    assert local["objects"] + cloud["objects"] == 48 - expired
    assert local["capacity"] == 1_600_000
    assert local["usage_ratio"] <= local["low_watermark"]  # started above the high mark
    assert cloud["objects"] == moved
    assert stats["health"]["status"] == "healthy"
    assert local["quarantined_objects"] == quarantined
    assert local["quarantined_objects"] + local["orphan_objects"] == 8
    app = sqlite3.connect(tmp_path / "demo" / "app.db")
    paths = [row[0] for row in app.execute("SELECT output_path FROM video_jobs")]
    app.close()
    assert len(paths) == 40
    assert paths.count(None) == expired  # on_expire = "null"
    live = [path for path in paths if path is not None]
    assert local["referenced_objects"] + cloud["referenced_objects"] == len(live)
    assert all((tmp_path / "demo" / path).is_file() for path in live)
    assert sum(path.startswith("data/storage/cold/") for path in live) == moved
    runs = json.loads(shelflife("-c", str(config), "runs", "--json", cwd=tmp_path).stdout)
    assert [(r["command"], r["trigger"], r["status"]) for r in runs["runs"]] == [
        ("apply", "demo", "ok")
    ]
    second = json.loads(shelflife("-c", str(config), "run", "--json", cwd=tmp_path).stdout)
    assert second["actions"] == []  # the pass left nothing to do
    again = shelflife("demo", cwd=tmp_path)
    assert again.returncode == 0
    check = shelflife("-c", str(config), "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout


def test_demo_refuses_to_clobber_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "precious.txt").write_text("mine")
    result = shelflife("demo", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a shelflife demo" in result.stderr
    assert (tmp_path / "demo" / "precious.txt").read_text() == "mine"


def test_object_commands_round_trip(tmp_path: Path) -> None:
    assert shelflife("init", cwd=tmp_path).returncode == 0
    assert shelflife("init", cwd=tmp_path).returncode == 2
    (tmp_path / "clip.mp4").write_bytes(b"clip bytes")
    put = shelflife("put", "clip.mp4", "videos/clip.mp4", "--json", cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["ref"] == "data/storage/outputs/videos/clip.mp4"
    url = shelflife("url", "data/storage/outputs/videos/clip.mp4", cwd=tmp_path)
    assert url.stdout.strip() == (tmp_path / "data/storage/outputs/videos/clip.mp4").as_uri()
    listing = json.loads(shelflife("ls", "videos", "--json", cwd=tmp_path).stdout)["objects"]
    assert [(e["tier"], e["key"], e["bytes"]) for e in listing] == [
        ("local", "videos/clip.mp4", 10)
    ]
    assert shelflife("get", "videos/clip.mp4", "back.mp4", cwd=tmp_path).returncode == 0
    assert (tmp_path / "back.mp4").read_bytes() == b"clip bytes"
    scan = json.loads(shelflife("scan", "--json", cwd=tmp_path).stdout)
    assert scan["tiers"]["local"]["objects"] == 1
    assert shelflife("rm", "videos/clip.mp4", cwd=tmp_path).returncode == 0
    again = shelflife("rm", "videos/clip.mp4", cwd=tmp_path)
    assert again.returncode == 0
    assert "already gone" in again.stderr
    missing = shelflife("get", "videos/clip.mp4", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no object" in missing.stderr


@pytest.mark.invariant("I7")
@pytest.mark.parametrize("key", ["../etc/passwd", "/etc/passwd", "a/../../b", "a\\b"])
def test_hostile_keys_are_refused_at_the_command_line(tmp_path: Path, key: str) -> None:
    (tmp_path / "f").write_bytes(b"x")
    result = shelflife("put", "f", key, cwd=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert not any((tmp_path / "data").rglob("passwd"))


@pytest.mark.invariant("I7")
def test_invalid_config_names_the_field_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "shelflife.toml").write_text("[tiers.local]\nurl = 'file://x'\ncapacity = 'huge'\n")
    result = shelflife("stats", cwd=tmp_path)
    assert result.returncode == 2
    assert "tiers.local.capacity" in result.stderr
    assert "hint:" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.invariant("I7")
@pytest.mark.extra("s3")
def test_check_reports_an_unreachable_store_with_a_hint(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "shelflife.toml").write_text(
        "[catalog]\nurl='sqlite:///c.db'\n[tiers.local]\nurl='file://out'\ncreate=true\n"
        f"[tiers.cloud]\nurl='s3://b/p'\nendpoint='http://127.0.0.1:{port}'\n"
        "access_key='x'\nsecret_key='very-secret-value'\n"
    )
    result = shelflife("check", "--json", cwd=tmp_path)
    assert result.returncode == 2
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["local"]["ok"] is True
    assert checks["cloud"]["ok"] is False
    assert "cannot reach" in checks["cloud"]["message"]
    assert checks["cloud"]["hint"]
    assert "very-secret-value" not in result.stdout + result.stderr


@pytest.mark.invariant("I7")
def test_check_fails_on_a_misspelled_folder_and_names_it(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "shelflife.toml").write_text(
        "[catalog]\nurl='sqlite:///c.db'\n[tiers.local]\nurl='file://outptus'\n"
    )
    result = shelflife("check", "--json", cwd=tmp_path)
    assert result.returncode == 2
    (local,) = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "local"]
    assert local["ok"] is False
    assert f"{tmp_path / 'outptus'} does not exist" in local["message"]
    assert "create = true" in local["hint"]
    assert not (tmp_path / "outptus").exists()  # nothing was created on the way
    # Asked for, the folder is created.
    (tmp_path / "shelflife.toml").write_text(
        "[catalog]\nurl='sqlite:///c.db'\n[tiers.local]\nurl='file://fresh'\ncreate = true\n"
    )
    assert shelflife("check", cwd=tmp_path).returncode == 0
    assert (tmp_path / "fresh").is_dir()


def test_check_warns_when_rows_would_not_follow_a_migration(tmp_path: Path) -> None:
    (tmp_path / "shelflife.toml").write_text(
        "[catalog]\nurl='sqlite:///c.db'\n"
        "[tiers.local]\nurl='file://out'\ncreate=true\n"
        "[tiers.cold]\nurl='file://cold'\ncreate=true\n"
        "[[rules]]\nid='spill'\ntier='local'\naction='migrate'\nto='cold'\nafter='30d'\n"
    )
    result = shelflife("check", "--json", cwd=tmp_path)
    assert result.returncode == 0
    warnings = [
        c for c in json.loads(result.stdout)["checks"] if "reference source" in c["message"]
    ]
    assert [(w["name"], w["warning"]) for w in warnings] == [("local", True)]
    assert "no reference source declared" in warnings[0]["message"]
    assert "will not be rewritten" in warnings[0]["message"]
    plan = shelflife("plan", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert any("no reference source declared" in w for w in json.loads(plan.stdout)["warnings"])


@pytest.mark.s3
def test_check_probes_an_archive_tier_without_reading(tmp_path: Path, s3_endpoint: str) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    (tmp_path / "shelflife.toml").write_text(
        f"[catalog]\nurl='sqlite:///c.db'\n[tiers.deep]\nurl='s3://{bucket}/p'\n"
        f"endpoint='{s3_endpoint}'\naccess_key='testing'\nsecret_key='testing'\n"
        "storage_class='GLACIER'\n"
    )
    result = shelflife("check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    (deep,) = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "deep"]
    assert "verified by the store's checksum" in deep["message"]


def test_check_reports_a_bucket_that_does_not_exist(tmp_path: Path, s3_endpoint: str) -> None:
    (tmp_path / "shelflife.toml").write_text(
        f"[tiers.cloud]\nurl='s3://no-such-bucket/p'\nendpoint='{s3_endpoint}'\n"
        "access_key='testing'\nsecret_key='testing'\n"
    )
    result = shelflife("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "FAIL" in result.stdout
    assert "does not exist" in result.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_check_explains_a_folder_owned_by_another_user() -> None:
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SHELFLIFE, "--help"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("the virtual environment is not readable by user nobody here")
    workdir = Path(tempfile.mkdtemp(dir="/tmp", prefix="shelflife-perm-"))
    try:
        workdir.chmod(0o777)
        locked = workdir / "locked"
        locked.mkdir(mode=0o755)
        config = workdir / "shelflife.toml"
        config.write_text(
            f"[catalog]\nurl='sqlite:///cat.db'\n[tiers.local]\nurl='file://{locked}'\n"
        )
        config.chmod(0o644)
        result = shelflife("-c", str(config), "check", cwd=workdir, user="65534")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "is not writable by nobody" in result.stdout
        assert "owned by root" in result.stdout
        assert "hint:" in result.stdout
    finally:
        shutil.rmtree(workdir)


def test_seed_environment_is_used_without_a_config_file(tmp_path: Path) -> None:
    env = {"STORAGE_PROVIDER": "LOCAL", "STORAGE_OUTPUT_DIR": str(tmp_path / "outputs")}
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "a.mp4").write_bytes(b"a" * 10)
    stats = shelflife("stats", "--json", cwd=tmp_path, env=env)
    assert stats.returncode == 0, stats.stderr
    local = json.loads(stats.stdout)["tiers"]["local"]
    assert local["capacity"] == 140_000_000_000
    scan = json.loads(shelflife("scan", "--json", cwd=tmp_path, env=env).stdout)
    assert scan["tiers"]["local"]["objects"] == 1


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = shelflife("frobnicate", cwd=tmp_path)
    assert result.returncode == 2


@pytest.mark.invariant("I7")
def test_check_reports_bad_credentials_clearly(tmp_path: Path, azure_endpoint: str) -> None:
    from tests.support.servers import AZURE_ACCOUNT, make_azure_container

    container = make_azure_container(azure_endpoint)
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="
    (tmp_path / "shelflife.toml").write_text(
        f"[tiers.cloud]\nurl='az://{container}/p'\nendpoint='{azure_endpoint}'\n"
        f"access_key='{AZURE_ACCOUNT}'\nsecret_key='{wrong}'\n"
    )
    result = shelflife("check", "--json", cwd=tmp_path)
    assert result.returncode == 2
    cloud = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "cloud")
    assert cloud["ok"] is False
    assert "refused access" in cloud["message"]
    assert "access_key/secret_key" in cloud["hint"]
    assert wrong not in result.stdout + result.stderr
