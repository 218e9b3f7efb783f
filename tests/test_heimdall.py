"""The two services shelflife replaces, tried as their authors would: the storage
service's environment (``STORAGE_*``, ``DATABASE_URL``) and its names, and the MinIO
clean-up's per-bucket functions, Celery names and ``heimdall_storage_*`` gauges — against
PostgreSQL, the S3 server, a real Prometheus and a real Celery worker."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from shelflife import Shelf
from shelflife.compat import StorageManager, StorageService, cleanup_orphan_files
from shelflife.compat import get_storage_stats as compat_stats
from shelflife.config import load_config
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.servers import free_port, s3_client, wait_for_port

ORIGINAL_TABLES = {
    "video_jobs": "output_path",
    "nexus_jobs": "output_path",
    "scheduled_posts": "video_path",
}
MB = 1_000_000


def storage_env(tmp_path: Path, s3_endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    """The storage service's variables, for MinIO (an S3-compatible endpoint)."""
    return {
        "STORAGE_PROVIDER": "CUSTOM",
        "STORAGE_ENDPOINT": s3_endpoint,
        "STORAGE_BUCKET": bucket,
        "STORAGE_ACCESS_KEY": "testing",
        "STORAGE_SECRET_KEY": "testing",
        "STORAGE_REGION": "us-east-1",
        "STORAGE_OUTPUT_DIR": str(tmp_path / "outputs"),
        **extra,
    }


def make_tables(url: str, tables: dict[str, str]) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table, column in tables.items():
            conn.execute(text(f"CREATE TABLE {table} (id serial PRIMARY KEY, {column} text)"))
            conn.execute(text(f"CREATE INDEX ON {table} ({column})"))
    engine.dispose()


def column_values(url: str, table: str, column: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        values = conn.execute(text(f"SELECT {column} FROM {table} ORDER BY id")).scalars()
        found = [str(value) for value in values]
    engine.dispose()
    return found


def aged_file(path: Path, size: int, days: float, *, sparse: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        if sparse:
            out.truncate(size)  # counted at its size, holding no disk
        else:
            out.write(os.urandom(size))
    stamp = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))


# -- the storage service: environment only -----------------------------------------------


@pytest.mark.postgres
@pytest.mark.s3
def test_enforce_threshold_rewrites_the_three_tables_in_environment_mode(
    tmp_path: Path, pg_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    """No config file: STORAGE_* and DATABASE_URL (the application's own, with its async
    driver). The three original columns become references, and ``enforce_threshold()``
    moves the oldest outputs to the bucket until the local tier is at 80 % of 140 GB,
    rewriting every row that named them (one through REMOTE_STORAGE_OUTPUT_DIR)."""
    make_tables(pg_url, ORIGINAL_TABLES)
    env = storage_env(
        tmp_path,
        s3_endpoint,
        s3_bucket,
        DATABASE_URL=pg_url.replace("postgresql+psycopg://", "postgresql+asyncpg://"),
        REMOTE_STORAGE_OUTPUT_DIR="/workspace/outputs",
    )
    outputs = tmp_path / "outputs"
    # 112 GB (80 %) held by one new render, and three old ones of 1 MB above it: two
    # must go to bring the tier to 80 %; the default low watermark (70 %) would take all
    aged_file(outputs / "renders/new.mp4", 112_000_000_000 - 1 * MB, 1, sparse=True)
    for days, name in ((30, "old1.mp4"), (20, "old2.mp4"), (10, "old3.mp4")):
        aged_file(outputs / f"renders/{name}", MB, days)
    rows = {
        "video_jobs": f"{outputs}/renders/old1.mp4",
        "nexus_jobs": "/workspace/outputs/renders/old2.mp4",  # the container's spelling
        "scheduled_posts": f"{outputs}/renders/old3.mp4",
    }
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        for table, value in rows.items():
            column = ORIGINAL_TABLES[table]
            conn.execute(text(f"INSERT INTO {table} ({column}) VALUES (:v)"), {"v": value})
        conn.execute(
            text("INSERT INTO video_jobs (output_path) VALUES (:v)"),
            {"v": f"{outputs}/renders/new.mp4"},
        )
    engine.dispose()

    config = load_config(None, env=env, cwd=tmp_path)
    assert config.source == "STORAGE_* environment"
    shelf = Shelf(config)
    assert [r.label for r in shelf.config.references] == [
        "app.video_jobs.output_path",
        "app.nexus_jobs.output_path",
        "app.scheduled_posts.video_path",
    ]
    manager = StorageManager(shelf)
    planned = [a["key"] for a in shelf.enforce(dry_run=True).as_json()["actions"]]
    assert "renders/new.mp4" in planned  # shelflife's own enforce goes down to 70 %
    planned = [a["key"] for a in manager.enforce_threshold(dry_run=True)["actions"]]  # type: ignore[union-attr]
    assert sorted(planned) == ["renders/old1.mp4", "renders/old2.mp4"]
    result = manager.enforce_threshold()
    assert result["status"] == "ok", result
    moved = sorted(str(a["key"]) for a in result["actions"])  # type: ignore[union-attr]
    assert moved == ["renders/old1.mp4", "renders/old2.mp4"]
    cloud = f"s3://{s3_bucket}/outputs/renders"
    assert column_values(pg_url, "video_jobs", "output_path") == [
        f"{cloud}/old1.mp4",
        f"{outputs}/renders/new.mp4",
    ]
    assert column_values(pg_url, "nexus_jobs", "output_path") == [f"{cloud}/old2.mp4"]
    assert column_values(pg_url, "scheduled_posts", "video_path") == [rows["scheduled_posts"]]
    assert not (outputs / "renders/old1.mp4").exists()
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "outputs/renders/old1.mp4",
        "outputs/renders/old2.mp4",
    ]
    assert shelf.stats()["tiers"]["local"]["usage_ratio"] == pytest.approx(0.8)

    # upload_file follows the provider (CUSTOM: the bucket), as the original did
    service = StorageService(shelf)
    assert service.provider == "CUSTOM"
    source = tmp_path / "thumb.jpg"
    source.write_bytes(b"jpeg")
    assert service.upload_file(source, "thumbs/t.jpg") == f"s3://{s3_bucket}/outputs/thumbs/t.jpg"
    assert service.upload_to_cloud(source, "thumbs/u.jpg").startswith(f"s3://{s3_bucket}/")
    shelf.close()


@pytest.mark.postgres
def test_check_says_which_original_tables_were_found(tmp_path: Path, pg_url: str) -> None:
    """``shelflife check`` in environment mode names the original columns it declared and
    those the database lacks; an unreachable database fails the check rather than leave
    a migration with no rows to rewrite."""
    make_tables(pg_url, {"video_jobs": "output_path"})
    make_tables(pg_url, {"scheduled_posts": "title"})  # the table, without the column
    env = {"STORAGE_OUTPUT_DIR": str(tmp_path / "out"), "DATABASE_URL": pg_url}
    result = shelflife("check", "--json", cwd=tmp_path, env=env)
    checks = json.loads(result.stdout)["checks"]
    assert checks[0]["name"] == "STORAGE_* environment"
    (found,) = [c for c in checks if c["component"] == "reference" and c["name"] == "app"]
    assert found["ok"] and not found["warning"]
    assert "found and declared: video_jobs.output_path" in found["message"]
    assert "nexus_jobs.output_path not declared (no table nexus_jobs)" in found["message"]
    assert "table scheduled_posts has no column video_path" in found["message"]
    assert not any("no reference source declared" in c["message"] for c in checks)

    port = free_port()  # nothing listens there
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{port}/app"
    result = shelflife("check", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 2
    checks = json.loads(result.stdout)["checks"]
    (unreachable,) = [c for c in checks if c["component"] == "reference" and c["name"] == "app"]
    assert not unreachable["ok"]
    assert "all are declared, and runs stop" in unreachable["message"]
    # a run on it moves nothing: its sources cannot be read
    aged_file(tmp_path / "out" / "a.mp4", 10, 5)
    run = shelflife("enforce", "--json", cwd=tmp_path, env=env)
    assert run.returncode != 0
    assert (tmp_path / "out" / "a.mp4").exists()


def test_storage_variables_apply_without_storage_provider(tmp_path: Path) -> None:
    config = load_config(
        None,
        env={"STORAGE_OUTPUT_DIR": "myout", "REMOTE_STORAGE_OUTPUT_DIR": "/workspace/outputs/"},
        cwd=tmp_path,
    )
    local = config.tiers["local"]
    assert local.url == f"file://{tmp_path / 'myout'}"
    assert local.ref_format == "myout/{key}"
    assert local.ref_aliases == ("/workspace/outputs/{key}",)
    assert local.capacity == 140_000_000_000
    assert config.tiers["cloud"].url == f"file://{tmp_path / 'data/storage/cold'}"
    assert config.environment is not None and config.environment.provider == "LOCAL"
    assert config.databases == {}  # no DATABASE_URL: no references, as check warns
    with Shelf(config) as shelf:
        service = StorageService(shelf)
        assert service.provider == "LOCAL"
        source = tmp_path / "clip.mp4"
        source.write_bytes(b"clip")
        assert service.upload_file(source, "clip.mp4") == "myout/clip.mp4"
        assert service.get_file_url("myout/clip.mp4") == "/static/outputs/clip.mp4"
        assert shelf.get("/workspace/outputs/clip.mp4") == b"clip"
    # DATABASE_URL alone is the application's, and selects nothing
    assert load_config(None, env={"DATABASE_URL": "sqlite://"}, cwd=tmp_path).environment is None
