"""The two services shelflife replaces, tried as their authors would: the storage
service's environment (``STORAGE_*``, ``DATABASE_URL``) and its names, and the MinIO
clean-up's per-bucket functions, Celery names and ``heimdall_storage_*`` gauges — against
PostgreSQL, the S3 server, a real Prometheus and a real Celery worker."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

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
MIGRATING = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"


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


def column_values(url: str, table: str, column: str) -> list[str | None]:
    engine = create_engine(url)
    with engine.connect() as conn:
        values = conn.execute(text(f"SELECT {column} FROM {table} ORDER BY id")).scalars()
        found = [None if value is None else str(value) for value in values]
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

    # the retention expires cloud objects past its days and blanks the rows naming them
    expired = manager.apply_retention_policy(days=25)
    assert [a["key"] for a in expired["actions"]] == ["renders/old1.mp4"]  # type: ignore[union-attr]
    assert column_values(pg_url, "video_jobs", "output_path") == [
        None,
        f"{outputs}/renders/new.mp4",
    ]
    assert column_values(pg_url, "nexus_jobs", "output_path") == [f"{cloud}/old2.mp4"]

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
    assert found["ok"]
    assert not found["warning"]
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
    # a run on it is refused: its sources cannot be read
    aged_file(tmp_path / "out" / "a.mp4", 10, 5)
    run = shelflife("enforce", cwd=tmp_path, env=env)
    assert run.returncode == 3, run.stderr  # refused: nothing moves
    assert "cannot read references from app.video_jobs.output_path" in run.stderr
    assert (tmp_path / "out" / "a.mp4").exists()


def over_the_watermark(outputs: Path) -> None:
    """A local tier above 80 % of 140 GB (a sparse render holding no disk) with an old
    output the watermark rule would move."""
    aged_file(outputs / "renders/big.mp4", 120_000_000_000, 1, sparse=True)
    aged_file(outputs / "renders/old.mp4", MB, 30)


def assert_refused_and_unmoved(tmp_path: Path, env: dict[str, str], outputs: Path) -> str:
    """``enforce`` and ``run`` are refused (exit 3) naming DATABASE_URL and the tables,
    and nothing leaves the local tier; returns what ``enforce`` said."""
    for command in ("enforce", "run"):
        result = shelflife(command, cwd=tmp_path, env=env)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert "DATABASE_URL" in result.stderr
        assert "video_jobs" in result.stderr
    assert (outputs / "renders/old.mp4").stat().st_size == MB
    assert (outputs / "renders/big.mp4").exists()
    cold = tmp_path / "data/storage/cold"
    assert not cold.exists() or not any(p.is_file() for p in cold.rglob("*"))
    return result.stderr


def reference_check(tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    result = shelflife("check", "--json", cwd=tmp_path, env=env)
    checks = json.loads(result.stdout)["checks"]
    (found,) = [c for c in checks if c["component"] == "reference" and c["name"] == "app"]
    assert (result.returncode == 2) is not found["ok"], result.stdout
    return found


@pytest.mark.invariant("I1")
def test_a_missing_sqlite_database_is_not_created_and_runs_are_refused(tmp_path: Path) -> None:
    """DATABASE_URL names a SQLite file that is not there (a typo, or a relative path read
    from another working directory): asking for the three tables does not create it, all
    three stay declared, ``check`` fails and a run that would move files is refused."""
    app = tmp_path / "app"
    app.mkdir()
    missing = app / "missing-app.db"
    outputs = tmp_path / "outputs"
    over_the_watermark(outputs)
    env = {
        "STORAGE_PROVIDER": "LOCAL",
        "STORAGE_OUTPUT_DIR": str(outputs),
        "DATABASE_URL": f"sqlite:///{missing}",
    }
    with Shelf(load_config(None, env=env, cwd=tmp_path)) as shelf:
        assert [r.label for r in shelf.config.references] == [
            "app.video_jobs.output_path",
            "app.nexus_jobs.output_path",
            "app.scheduled_posts.video_path",
        ]
        assert shelf.environment_references is not None
        assert "no SQLite database file" in (shelf.environment_references.unreachable or "")
    assert not missing.exists()  # never created by asking
    found = reference_check(tmp_path, env)
    assert not found["ok"]
    assert "no SQLite database file" in found["message"]
    assert "unable to open database file" in assert_refused_and_unmoved(tmp_path, env, outputs)
    assert not missing.exists()  # nor by the run's reading

    # a relative path is read from the working directory: right from the application's
    engine = create_engine(f"sqlite:///{app / 'app.db'}")
    with engine.begin() as conn:
        for table, column in ORIGINAL_TABLES.items():
            conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {column} TEXT)"))
    engine.dispose()
    env["DATABASE_URL"] = "sqlite:///app.db"
    env["STORAGE_OUTPUT_DIR"] = str(outputs)
    assert not reference_check(tmp_path, env)["ok"]  # from elsewhere: no such file
    assert not (tmp_path / "app.db").exists()
    assert reference_check(app, env)["ok"]


@pytest.mark.postgres
@pytest.mark.invariant("I1")
def test_tables_off_the_search_path_keep_all_declared_and_refuse_runs(
    tmp_path: Path, pg_url: str
) -> None:
    """The three tables exist, in a schema the URL's search path does not name (as in
    another database): none is found, so none is left out; ``check`` fails with a hint,
    and runs are refused with nothing moved. Naming the schema finds all three."""
    elsewhere = f"app_{uuid.uuid4().hex[:8]}"
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {elsewhere}"))
        for table, column in ORIGINAL_TABLES.items():
            conn.execute(text(f"CREATE TABLE {elsewhere}.{table} (id serial, {column} text)"))
    engine.dispose()
    outputs = tmp_path / "outputs"
    over_the_watermark(outputs)
    env = {"STORAGE_OUTPUT_DIR": str(outputs), "DATABASE_URL": pg_url}
    found = reference_check(tmp_path, env)
    assert not found["ok"]
    assert "none of the original columns is in the application database" in found["message"]
    assert "no table video_jobs" in found["message"]
    assert "search path" in found["hint"]
    said = assert_refused_and_unmoved(tmp_path, env, outputs)
    assert "cannot read references from app.video_jobs.output_path" in said
    assert "no table video_jobs" in said

    env["DATABASE_URL"] = (
        make_url(pg_url).update_query_dict({"options": f"-csearch_path={elsewhere}"})
    ).render_as_string(hide_password=False)
    found = reference_check(tmp_path, env)
    assert found["ok"]
    declared = "found and declared: video_jobs.output_path, nexus_jobs.output_path"
    assert declared in found["message"]


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
    assert config.environment is not None
    assert config.environment.provider == "LOCAL"
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


# -- the MinIO clean-up: three buckets, 30/30/60 days ----------------------------------------

BUCKETS = ("synthetic-iq", "audio-chunks", "raw-iq")  # 30, 30 and 60 days of grace


class Heimdall:
    """The MinIO clean-up's world: three buckets on the S3 server, the application's
    tables in PostgreSQL, and the shelflife.toml of docs/migrating.md for them."""

    def __init__(self, tmp_path: Path, pg_url: str, s3_endpoint: str) -> None:
        self.base = tmp_path
        self.s3 = s3_client(s3_endpoint)
        suffix = uuid.uuid4().hex[:8]
        self.buckets = {tier: f"heimdall-{tier}-{suffix}" for tier in BUCKETS}
        for bucket in self.buckets.values():
            self.s3.create_bucket(Bucket=bucket)
        # per bucket: four referenced objects, an orphan past its grace, one within it
        # (45 days: past 30, within 60), and on raw-iq one past 60 (90 days)
        self.orphans: dict[str, list[str]] = {}
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE synthetic_iq_samples (id serial PRIMARY KEY, "
                    "dataset_id text, sample_idx int, receiver_idx int)"
                )
            )
            conn.execute(text("CREATE TABLE audio_chunks (id serial PRIMARY KEY, minio_path text)"))
            conn.execute(
                text("CREATE TABLE measurements (id serial PRIMARY KEY, iq_data_location text)")
            )
            for table, column in (
                ("audio_chunks", "minio_path"),
                ("measurements", "iq_data_location"),
            ):
                conn.execute(text(f"CREATE INDEX ON {table} ({column})"))
            # the synthetic samples' files are named by three columns: a view spells them
            conn.execute(
                text(
                    "CREATE VIEW synthetic_iq_files AS SELECT 'datasets/' || dataset_id || '/' "
                    "|| sample_idx || '_' || receiver_idx || '.npy' AS path "
                    "FROM synthetic_iq_samples"
                )
            )
            for number in range(4):
                conn.execute(
                    text(
                        "INSERT INTO synthetic_iq_samples (dataset_id, sample_idx, receiver_idx) "
                        "VALUES ('d1', :n, 0)"
                    ),
                    {"n": number},
                )
                self.put("synthetic-iq", f"datasets/d1/{number}_0.npy", 45)
                conn.execute(
                    text("INSERT INTO audio_chunks (minio_path) VALUES (:v)"),
                    {"v": f"chunks/{number}.wav"},
                )
                self.put("audio-chunks", f"chunks/{number}.wav", 45)
                conn.execute(
                    text("INSERT INTO measurements (iq_data_location) VALUES (:v)"),
                    {"v": f"s3://{self.buckets['raw-iq']}/sessions/{number}.iq"},
                )
                self.put("raw-iq", f"sessions/{number}.iq", 90)
        engine.dispose()
        self.orphan("synthetic-iq", "datasets/gone/0_0.npy", 45)
        self.put("synthetic-iq", "datasets/young/0_0.npy", 10)
        self.orphan("audio-chunks", "chunks/deleted.wav", 45)
        self.put("raw-iq", "sessions/recent-orphan.iq", 45)  # within raw-iq's 60 days
        self.orphan("raw-iq", "sessions/old-orphan.iq", 90)
        self.config = tmp_path / "shelflife.toml"
        self.config.write_text(self.toml())

    def put(self, tier: str, key: str, days: float) -> None:
        modified = datetime.now(UTC) - timedelta(days=days)
        self.s3.put_object(
            Bucket=self.buckets[tier],
            Key=key,
            Body=os.urandom(1000),
            Metadata={"mtime": f"{modified.timestamp():.6f}"},  # as rclone keeps it
        )

    def orphan(self, tier: str, key: str, days: float) -> None:
        self.put(tier, key, days)
        self.orphans.setdefault(tier, []).append(key)

    def keys(self, tier: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.buckets[tier]).get("Contents", [])
        return sorted(item["Key"] for item in listed)

    def toml(self) -> str:
        """The MinIO clean-up's shelflife.toml from docs/migrating.md, on this test's
        buckets."""
        text = MIGRATING.read_text(encoding="utf-8")
        section = text[text.index("## From the MinIO clean-up") :]
        block = section[section.index("```toml\n") + 8 :]
        block = block[: block.index("```")]
        for tier, bucket in self.buckets.items():
            block = block.replace(f"heimdall-{tier}", bucket)
        return block


@pytest.fixture
def heimdall(
    tmp_path: Path, pg_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Heimdall:
    """The clean-up's own variables, as its deployment sets them."""
    for name, value in {
        "MINIO_ENDPOINT": s3_endpoint.removeprefix("http://"),
        "MINIO_ACCESS_KEY": "testing",
        "MINIO_SECRET_KEY": "testing",
        "MINIO_REGION": "us-east-1",
        "HEIMDALL_DATABASE_URL": pg_url,
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/12",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/12",
    }.items():
        monkeypatch.setenv(name, value)
    return Heimdall(tmp_path, pg_url, s3_endpoint)


@pytest.mark.postgres
@pytest.mark.s3
def test_cleanup_orphan_files_dry_run_per_bucket(heimdall: Heimdall) -> None:
    """``cleanup_orphan_files(dry_run=True, bucket=…)`` reports each bucket's orphans past
    its grace (30, 30, 60 days) and deletes nothing; without a bucket, all three; then a
    real clean-up of one bucket deletes exactly its orphan."""
    shelf = Shelf.open(heimdall.config)
    before = {tier: heimdall.keys(tier) for tier in BUCKETS}
    for tier in BUCKETS:
        bucket = heimdall.buckets[tier]
        result = cleanup_orphan_files(dry_run=True, bucket=bucket, shelf=shelf)
        assert result["dry_run"] is True
        assert result["status"] == "ok", result
        assert list(result["buckets"]) == [bucket]
        entry = result["buckets"][bucket]
        assert entry["tier"] == tier
        assert entry["orphans_found"] == len(heimdall.orphans[tier]) == 1
        assert entry["deleted"] == 0
        assert entry["orphan_size_gb"] == pytest.approx(1000 / 1e9)
        assert result["total_orphans"] == 1
    assert cleanup_orphan_files(dry_run=True, bucket="raw-iq", shelf=shelf)["total_orphans"] == 1
    every = cleanup_orphan_files(dry_run=True, shelf=shelf)
    assert sorted(every["buckets"]) == sorted(heimdall.buckets.values())
    assert every["total_orphans"] == 3
    assert {tier: heimdall.keys(tier) for tier in BUCKETS} == before  # nothing deleted

    audio = heimdall.buckets["audio-chunks"]
    done = cleanup_orphan_files(bucket=audio, shelf=shelf)
    assert done["status"] == "ok", done
    assert (done["buckets"][audio]["deleted"], done["total_deleted"]) == (1, 1)
    assert heimdall.keys("audio-chunks") == [f"chunks/{n}.wav" for n in range(4)]
    assert heimdall.keys("synthetic-iq") == before["synthetic-iq"]

    stats = compat_stats(shelf=shelf)
    synthetic = stats["buckets"][heimdall.buckets["synthetic-iq"]]
    assert synthetic["total_objects"] == 6
    assert synthetic["referenced_objects"] == 4
    assert synthetic["orphan_objects"] == 2  # the young one counts as an orphan too
    assert stats["buckets"][audio]["orphan_objects"] == 0
    with pytest.raises(Exception, match="no tier holds bucket"):
        cleanup_orphan_files(dry_run=True, bucket="heimdall-nope", shelf=shelf)
    shelf.close()


def tool(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/test.sh installs it")
    return path


@pytest.mark.postgres
@pytest.mark.s3
def test_a_real_prometheus_scrapes_the_six_heimdall_gauges(heimdall: Heimdall) -> None:
    """``[metrics] compat = "heimdall"`` on ``shelflife serve --port …``: Prometheus
    scrapes ``heimdall_storage_*`` under the original names, in GB, labelled by bucket,
    beside shelflife's own series; ``/metrics/storage`` and ``/stats/storage`` answer."""
    prometheus = tool("prometheus")
    token = "heimdall-read-" + uuid.uuid4().hex
    digest = hashlib.sha256(token.encode()).hexdigest()
    with heimdall.config.open("a") as config:
        config.write(f'[[api.tokens]]\nname = "grafana"\nhash = "sha256:{digest}"\n')
    shelf = Shelf.open(heimdall.config)
    compat_stats(shelf=shelf)  # what the hourly minio-storage-stats stores
    shelf.close()
    port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    server = subprocess.Popen(
        [SHELFLIFE, "-c", str(heimdall.config), "serve", "--port", str(port)],
        cwd=heimdall.base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (heimdall.base / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: heimdall-backend
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={heimdall.base / 'prometheus.yml'}",
            f"--storage.tsdb.path={heimdall.base / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wanted = {
        "heimdall_storage_disk_usage_gb": 6000 / 1e9,
        "heimdall_storage_bucket_size_gb": 6000 / 1e9,
        "heimdall_storage_orphan_files": 2.0,
        "heimdall_storage_orphan_size_gb": 2000 / 1e9,
        "heimdall_storage_total_objects": 6.0,
        "heimdall_storage_referenced_objects": 4.0,
    }
    try:
        wait_for_port(port, server, "shelflife serve")
        wait_for_port(prom_port, prom, "prometheus")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/storage") as reply:
            assert json.load(reply)["status"] in ("healthy", "warning", "critical")
        stats = f"http://127.0.0.1:{port}/stats/storage"  # the storage service's path
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(stats)  # a token, as /api/v1/stats/storage
        request = urllib.request.Request(stats, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as reply:
            assert set(json.load(reply)["tiers"]) == set(BUCKETS)
        found: dict[str, dict[str, float]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(found) < len(wanted) + 1:
            for name in [*wanted, "shelflife_tier_objects"]:
                query = f"http://127.0.0.1:{prom_port}/api/v1/query?query={name}"
                with urllib.request.urlopen(query, timeout=10) as reply:
                    result = json.load(reply)["data"]["result"]
                if result:
                    label = "tier" if name.startswith("shelflife_") else "bucket"
                    found[name] = {
                        item["metric"][label]: float(item["value"][1]) for item in result
                    }
            time.sleep(0.5)
        synthetic = heimdall.buckets["synthetic-iq"]
        for name, value in wanted.items():
            assert name in found, f"Prometheus never scraped {name}"
            assert set(found[name]) == set(heimdall.buckets.values()), name
            assert found[name][synthetic] == pytest.approx(value), name
        assert found["shelflife_tier_objects"]["synthetic-iq"] == 6.0  # shelflife's own too
    finally:
        for process in (prom, server):
            process.terminate()
            process.wait(20)


CELERY = str(Path(SHELFLIFE).parent / "celery")


CLIENT = """
import json, sys
from shelflife.celery import app

queue, bucket = sys.argv[1], sys.argv[2]
kwargs = {"dry_run": True, "bucket": bucket}
name = "tasks.minio_lifecycle.cleanup_orphan_files"
result = app.send_task(name, kwargs=kwargs, queue=queue).get(timeout=120)
stats = app.send_task("tasks.minio_lifecycle.get_storage_stats", queue=queue).get(timeout=120)
print(json.dumps([result, stats]))
"""


@pytest.mark.postgres
@pytest.mark.s3
def test_celery_tasks_and_beat_entries_under_the_original_names(heimdall: Heimdall) -> None:
    """With ``[celery] compat_names = true`` beat's entries are ``minio-lifecycle-cleanup``
    (03:00) and ``minio-storage-stats`` (hourly), and a worker answers the original task
    names: ``cleanup_orphan_files`` dry and per bucket, ``get_storage_stats`` with its
    ``buckets``; ``storage.manage_lifecycle`` is registered too."""
    from celery.schedules import crontab

    from shelflife.celery import app, beat_schedule

    queue = f"heimdall-{uuid.uuid4().hex[:8]}"  # the test's own, on a shared Redis
    celery = f'compat_names = true\nqueue = "{queue}"'
    heimdall.config.write_text(heimdall.config.read_text().replace("compat_names = true", celery))
    config = load_config(heimdall.config)
    schedule = beat_schedule(config)
    assert set(schedule) == {"minio-lifecycle-cleanup", "minio-storage-stats"}
    assert schedule["minio-lifecycle-cleanup"]["schedule"] == crontab(minute="0", hour="3")
    assert schedule["minio-storage-stats"]["schedule"] == crontab(minute="0")
    names = {"storage.manage_lifecycle", "tasks.minio_lifecycle.cleanup_orphan_files"}
    assert names | {"tasks.minio_lifecycle.get_storage_stats"} <= set(app.tasks)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    env["SHELFLIFE_CONFIG"] = str(heimdall.config)
    log = heimdall.base / "worker.log"
    worker = subprocess.Popen(
        [CELERY, "-A", "shelflife.celery", "worker", "-Q", queue, "-c", "1",
         "-n", f"{queue}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=heimdall.base,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        raw = heimdall.buckets["raw-iq"]
        # The client in a process of its own, configured as an application's would be:
        # this one's Celery app may hold connections of another test's broker.
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, queue, raw],
            cwd=heimdall.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert client.returncode == 0, client.stderr[-3000:] + log.read_text()[-3000:]
        result, body = json.loads(client.stdout)
        assert result["dry_run"] is True
        assert result["status"] == "ok", result
        assert list(result["buckets"]) == [raw]
        assert result["buckets"][raw]["orphans_found"] == 1
        assert body["buckets"][raw]["orphan_objects"] == 2
        assert body["buckets"][raw]["referenced_objects"] == 4
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
    assert heimdall.keys("raw-iq").count("sessions/old-orphan.iq") == 1  # dry: kept


def test_base_storage_service_is_the_originals_singleton(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``from shelflife.compat import base_storage_service`` opens the usual configuration
    on first use (here the environment) and is the same object after."""
    import shelflife.compat

    monkeypatch.setattr(shelflife.compat, "_opened", {})
    for name in [n for n in os.environ if n.startswith(("STORAGE_", "SHELFLIFE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STORAGE_PROVIDER", "local")
    monkeypatch.chdir(tmp_path)
    from shelflife.compat import base_storage_service

    assert base_storage_service.provider == "LOCAL"
    assert base_storage_service is shelflife.compat.base_storage_service
    source = tmp_path / "a.mp4"
    source.write_bytes(b"a")
    assert base_storage_service.upload_file(source, "a.mp4") == "data/storage/outputs/a.mp4"
    base_storage_service.shelf.close()


def test_the_heimdall_gauges_only_when_asked(tmp_path: Path) -> None:
    """shelflife's own series always; ``heimdall_storage_*`` only with the compat."""
    from shelflife.api.metrics import render
    from shelflife.config import parse_config

    raw: dict[str, Any] = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {"local": {"url": f"file://{tmp_path / 'out'}", "create": True}},
    }
    for compat, shown in ((None, False), ("heimdall", True)):
        if compat:
            raw["metrics"] = {"compat": compat}
        with Shelf(parse_config(raw, base_dir=tmp_path, source="test", env={})) as shelf:
            shelf.put(b"x" * 2000, "a.bin")
            shelf.scan()
            text_ = render(shelf).decode()
        assert "shelflife_tier_bytes" in text_
        assert ('heimdall_storage_bucket_size_gb{bucket="local"} 2e-06' in text_) is shown
        assert ("heimdall_storage_total_objects" in text_) is shown
