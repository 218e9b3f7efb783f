"""Soak: ``shelflife daemon`` for half an hour under a steady application load.

The script builds a site of its own and leaves the machine as it found it:

- an application database and a catalog (two PostgreSQL databases it creates and drops),
  a ``file://`` tier and an S3 tier on a moto server it starts;
- rules: migrate ``local`` → ``cloud`` by age, expire ``tmp/`` objects, collect orphans
  after a grace; ``[schedule]`` entries firing every period (a minute by default);
- ``shelflife daemon`` (the scheduler and the HTTP API) and a separate ``shelflife serve``
  for uploads, both the real command line, each logging to a file;
- an application (a thread of this script, knowing nothing of shelflife but its HTTP API)
  that at a steady rate writes objects into the local folder and records them in rows,
  uploads objects through the API, reads objects back by their row's location,
  un-references some (the column set to NULL, or the row deleted) and deletes some
  (the row, then the object).

At the end it checks: every row's location holds the bytes written (nothing lost, no row
dangling); every orphan eligible for collection (older than its grace, its upload lease
over, un-referenced) before a lifecycle run started was collected by it; the daemon's
memory is flat (RSS at minute 5 against the last sample, at most 1.2×); no ERROR or
Traceback line in either log; every recorded run ended ok, or partial with its reasons.
The figures go to ``.artifacts/soak.json`` (``--record`` also writes ``docs/soak.json``,
the copy docs/reliability.md reports); any failed check exits 1 and says which.

    PYTHONPATH=src .venv/bin/python scripts/soak.py                 # 30 minutes
    PYTHONPATH=src .venv/bin/python scripts/soak.py --minutes 3 --period 15
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUTPUT = ROOT / ".artifacts" / "soak.json"
RECORD = ROOT / "docs" / "soak.json"
PG_ADMIN = os.environ.get(
    "SHELFLIFE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BAD_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) |Traceback")  # "date time LEVEL name: …"
RSS_LIMIT = 1.2
SAMPLE_EVERY = 10.0  # seconds between RSS samples
SLACK = timedelta(seconds=2)  # a run reads the references this soon after it starts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise SoakError(f"{name} exited with code {process.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SoakError(f"{name} did not listen on port {port} within 90 s")


class SoakError(Exception):
    """The site could not be set up or stopped: no figures."""


def cron(period: int) -> str:
    if period == 60:
        return "* * * * *"
    if period < 60 and 60 % period == 0:
        return f"* * * * * */{period}"  # croniter's sixth field: seconds
    raise SoakError(f"--period must be 60 or divide 60, not {period}")


# -- the site ---------------------------------------------------------------------------------


@dataclass
class Site:
    work: Path
    period: int
    pg_admin: str
    tag: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.local = self.work / "media"
        self.staging = self.work / "staging"  # the application's half-written files
        self.config = self.work / "shelflife.toml"
        self.bucket = f"soak-{self.tag.replace('_', '-')}"
        self.grace = timedelta(seconds=2 * self.period)
        self.lease = timedelta(seconds=2 * self.period)
        self.migrate_after = timedelta(seconds=2 * self.period)
        self.expire_after = timedelta(seconds=5 * self.period)
        base = self.pg_admin.rsplit("/", 1)[0]
        self.app_db = f"shelflife_soak_{self.tag}_app"
        self.catalog_db = f"shelflife_soak_{self.tag}_catalog"
        self.app_url = f"{base}/{self.app_db}"
        self.catalog_url = f"{base}/{self.catalog_db}"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
        }

    # setting up

    def start(self) -> None:
        self.local.mkdir(parents=True)
        self.staging.mkdir()
        self._databases(create=True)
        port = free_port()
        self.s3 = f"http://127.0.0.1:{port}"
        self._spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port)
        self.s3_client().create_bucket(Bucket=self.bucket)
        from sqlalchemy import create_engine

        engine = create_engine(self.app_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE assets (id serial PRIMARY KEY, name text NOT NULL, location text,"
                " sha256 text NOT NULL, size integer NOT NULL)"
            )
            conn.exec_driver_sql("CREATE INDEX assets_location ON assets (location)")
        engine.dispose()
        self.config.write_text(self._config_text())
        check = self.cli("check")
        if check.returncode != 0:
            raise SoakError(f"shelflife check failed:\n{check.stdout}{check.stderr}")
        created = self.cli("token", "create", "soak-app", "--scopes", "write", "--json")
        if created.returncode != 0:
            raise SoakError(f"shelflife token create failed:\n{created.stderr}")
        self.token = json.loads(created.stdout)["token"]
        self.daemon_port, self.serve_port = free_port(), free_port()
        base = [str(BIN / "shelflife"), "--config", str(self.config), "--log-level", "info"]
        self._spawn("daemon", [*base, "daemon", "--port", str(self.daemon_port)], self.daemon_port)
        self._spawn("serve", [*base, "serve", "--port", str(self.serve_port)], self.serve_port)

    def _spawn(self, name: str, command: list[str], port: int) -> None:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=self.work, env=self.env
            )
        self.procs[name], self.logs[name] = process, log
        wait_for_port(port, process, name, log)

    def _config_text(self) -> str:
        every = cron(self.period)
        return f"""\
[catalog]
url = "{self.catalog_url}"

[databases.app]
url = "{self.app_url}"

[tiers.local]
url = "file://{self.local}"
ref_format = "media/{{key}}"
upload_lease = "{seconds(self.lease)}"

[tiers.cloud]
url = "s3://{self.bucket}/archive"
endpoint = "{self.s3}"
region = "us-east-1"
access_key = "testing"
secret_key = "testing"
ref_format = "s3://{self.bucket}/archive/{{key}}"
upload_lease = "{seconds(self.lease)}"

[[references]]
database = "app"
table = "assets"
column = "location"
on_expire = "null"

[[rules]]
id = "age-out"
tier = "local"
action = "migrate"
to = "cloud"
after = "{seconds(self.migrate_after)}"

[[rules]]
id = "tmp-retention"
tier = "*"
action = "expire"
after = "{seconds(self.expire_after)}"
filter = {{ prefix = "tmp/" }}

[[rules]]
id = "orphans"
tier = "*"
action = "collect-orphans"
grace = "{seconds(self.grace)}"
max_fraction = "90%"

[schedule]
lifecycle = "{every}"
stats = "{every}"
"""

    def _databases(self, *, create: bool) -> None:
        from sqlalchemy import create_engine

        admin = create_engine(self.pg_admin, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                for name in (self.app_db, self.catalog_db):
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    if create:
                        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except Exception as exc:
            raise SoakError(f"PostgreSQL at {self.pg_admin}: {exc}") from exc
        finally:
            admin.dispose()

    # using

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "shelflife"), "--config", str(self.config), *args],
            cwd=self.work, env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    # stopping

    def stop(self, name: str) -> int | None:
        process = self.procs.pop(name, None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                return None
        return process.returncode

    def close(self, keep: bool) -> None:
        for name in list(self.procs):
            self.stop(name)
        if not keep:
            self._databases(create=False)


def seconds(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())}s"


# -- the application --------------------------------------------------------------------------


@dataclass
class Tracked:
    key: str
    sha256: str
    written_at: datetime


@dataclass
class Application:
    """Writes, uploads, reads, un-references and deletes at ``rate`` operations a second,
    as an application that knows its rows and its stores but not shelflife would."""

    site: Site
    rate: float
    seed: int
    live: dict[int, Tracked] = field(default_factory=dict)  # rows the app believes point
    orphaned: dict[str, datetime] = field(default_factory=dict)  # key → when let go
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import httpx
        from sqlalchemy import create_engine

        self.random = random.Random(self.seed)
        self.engine = create_engine(self.site.app_url, pool_size=2)
        self.s3 = self.site.s3_client()
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.site.serve_port}",
            headers={"Authorization": f"Bearer {self.site.token}"},
            timeout=60,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="application", daemon=True)
        self.serial = 0
        self.journal = (self.site.work / "app.log").open("a", buffering=1)

    def note(self, *fields: object) -> None:
        """One line per row the application changes, for reading a failure."""
        self.journal.write(f"{now():%H:%M:%S.%f} {' '.join(map(str, fields))}\n")

    def _loop(self) -> None:
        operations = [
            (self.write, 3.0),
            (self.upload, 1.5),
            (self.read, 3.5),
            (self.unreference, 0.9),
            (self.delete, 0.6),
        ]
        functions = [op for op, _ in operations]
        weights = [w for _, w in operations]
        interval = 1.0 / self.rate
        upcoming = time.monotonic()
        while not self.stop.is_set():
            operation = self.random.choices(functions, weights)[0]
            try:
                operation()
            except Exception as exc:  # the soak reports it; the load goes on
                self.problems.append(f"{operation.__name__}: {type(exc).__name__}: {exc}")
                self.counts["app_errors"] += 1
            upcoming += interval
            self.stop.wait(max(0.0, upcoming - time.monotonic()))

    # operations

    def _new(self, source: str) -> tuple[str, bytes]:
        self.serial += 1
        prefix = "tmp" if self.random.random() < 0.3 else "keep"
        key = f"{prefix}/{source}/{self.serial:06d}-{uuid.uuid4().hex[:8]}.bin"
        return key, self.random.randbytes(self.random.randint(1024, 64 * 1024))

    def _insert(self, key: str, location: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        with self.engine.begin() as conn:
            row = conn.exec_driver_sql(
                "INSERT INTO assets (name, location, sha256, size) VALUES (%s, %s, %s, %s)"
                " RETURNING id",
                (key, location, digest, len(data)),
            ).scalar_one()
        self.live[int(row)] = Tracked(key, digest, now())
        self.note("insert", row, location)

    def write(self) -> None:
        """A file written into the local folder (staged, then renamed), then its row."""
        key, data = self._new("app")
        staged = self.site.staging / uuid.uuid4().hex
        staged.write_bytes(data)
        target = self.site.local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        self._insert(key, f"media/{key}", data)
        self.counts["writes"] += 1

    def upload(self) -> None:
        """An upload through the HTTP API; most are then recorded in a row."""
        key, data = self._new("api")
        tier = "local" if self.random.random() < 0.7 else "cloud"
        answer = self.http.post(
            "/api/v1/objects", data={"key": key, "tier": tier}, files={"file": ("f.bin", data)}
        )
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")
        body = answer.json()
        self.counts["uploads"] += 1
        if self.random.random() < 0.15:
            self.orphaned[key] = now()  # never referenced: an orphan once its lease is over
            self.counts["uploads_unreferenced"] += 1
            return
        location = spell(self.site, body["tier"], body["key"])
        if body.get("ref") != location:
            raise RuntimeError(f"upload of {key} gave the row value {body.get('ref')!r}")
        self._insert(key, location, data)

    def read(self) -> None:
        """An object read back from where its row says it is now."""
        if not self.live:
            return
        row = self.random.choice(list(self.live))
        tracked = self.live[row]
        for attempt in range(6):
            with self.engine.connect() as conn:
                location = conn.exec_driver_sql(
                    "SELECT location FROM assets WHERE id = %s", (row,)
                ).scalar()
            if location is None:
                self._expired(row, tracked)
                return
            data = fetch(self.site, self.s3, location)
            if data is not None:
                break
            # moved between reading the row and reading the object: read the row again
            self.counts["read_retries"] += 1
            time.sleep(0.1 * (attempt + 1))
        else:
            self.problems.append(f"read: row {row} ({location}) holds no object")
            self.counts["lost_reads"] += 1
            return
        if hashlib.sha256(data).hexdigest() != tracked.sha256:
            self.problems.append(f"read: row {row} ({location}) holds other bytes")
            self.counts["lost_reads"] += 1
        self.counts["reads"] += 1

    def _expired(self, row: int, tracked: Tracked) -> None:
        """The row's column was blanked by shelflife: only the tmp/ retention may."""
        del self.live[row]
        self.note("found-blank", row, tracked.key)
        self.counts["rows_expired_seen"] += 1
        if not tracked.key.startswith("tmp/"):
            self.problems.append(f"row {row} ({tracked.key}) was blanked, not under tmp/")

    def unreference(self) -> None:
        """The row lets the object go: its column set to NULL, or the row deleted."""
        if not self.live:
            return
        row = self.random.choice(list(self.live))
        blank = self.random.random() < 0.5
        statement = (
            # RETURNING gives the new value: the old one comes from the locked row
            "UPDATE assets SET location = NULL FROM (SELECT id, location FROM assets"
            " WHERE id = %s AND location IS NOT NULL FOR UPDATE) AS old"
            " WHERE assets.id = old.id RETURNING old.location"
            if blank
            else "DELETE FROM assets WHERE id = %s RETURNING location"
        )
        with self.engine.begin() as conn:
            location = conn.exec_driver_sql(statement, (row,)).scalar()
        tracked = self.live.pop(row)
        self.note("blank" if blank else "unlink", row, location)
        if location is None:  # expired meanwhile
            self.live[row] = tracked
            self._expired(row, tracked)
            return
        self.orphaned[tracked.key] = now()
        self.counts["unreferenced"] += 1

    def delete(self) -> None:
        """The row, then the object where the row said it was."""
        if not self.live:
            return
        row = self.random.choice(list(self.live))
        with self.engine.begin() as conn:
            location = conn.exec_driver_sql(
                "DELETE FROM assets WHERE id = %s RETURNING location", (row,)
            ).scalar()
        tracked = self.live.pop(row)
        self.note("delete", row, location)
        self.orphaned[tracked.key] = now()  # a copy elsewhere would be an orphan
        if location is None:
            self.counts["rows_expired_seen"] += 1
            return
        remove(self.site, self.s3, location)
        self.counts["deletes"] += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(120)
        self.http.close()
        self.engine.dispose()
        self.journal.close()


def now() -> datetime:
    return datetime.now(UTC)


def spell(site: Site, tier: str, key: str) -> str:
    return f"media/{key}" if tier == "local" else f"s3://{site.bucket}/archive/{key}"


def parse(site: Site, location: str) -> tuple[str, str] | None:
    """(tier, key) of a row's value, or None when it spells no tier."""
    cloud = f"s3://{site.bucket}/archive/"
    if location.startswith("media/"):
        return "local", location.removeprefix("media/")
    if location.startswith(cloud):
        return "cloud", location.removeprefix(cloud)
    return None


def fetch(site: Site, s3: Any, location: str) -> bytes | None:
    """The bytes at a row's location, as the application reads them; None if none."""
    place = parse(site, location)
    if place is None:
        return None
    tier, key = place
    if tier == "local":
        try:
            return (site.local / key).read_bytes()
        except FileNotFoundError:
            return None
    try:
        return bytes(s3.get_object(Bucket=site.bucket, Key=f"archive/{key}")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def remove(site: Site, s3: Any, location: str) -> None:
    place = parse(site, location)
    if place is None:
        return
    tier, key = place
    if tier == "local":
        (site.local / key).unlink(missing_ok=True)
    else:
        s3.delete_object(Bucket=site.bucket, Key=f"archive/{key}")


# -- watching ---------------------------------------------------------------------------------


class Sampler:
    """The resident set size of each process, every ``SAMPLE_EVERY`` seconds."""

    def __init__(self, processes: dict[str, int]) -> None:
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in processes}
        self.start = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            elapsed = time.monotonic() - self.start
            for name, process in self.processes.items():
                try:
                    self.samples[name].append((elapsed, int(process.memory_info().rss)))
                except Exception:  # the process ended: nothing more to sample
                    continue
            self.stop.wait(SAMPLE_EVERY)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)

    def flatness(self, name: str, warm: float) -> tuple[int, int, float]:
        """(RSS at the first sample after ``warm`` seconds, at the last, their ratio)."""
        samples = self.samples[name]
        after = [rss for elapsed, rss in samples if elapsed >= warm] or [samples[-1][1]]
        first, last = after[0], samples[-1][1]
        return first, last, round(last / first, 3)


def runs(site: Site) -> list[dict[str, Any]]:
    listed = site.cli("runs", "--json", "--limit", "100000")
    if listed.returncode != 0:
        raise SoakError(f"shelflife runs failed:\n{listed.stderr}")
    return list(json.loads(listed.stdout)["runs"])


def wait_for_a_run_after(site: Site, moment: datetime, timeout: float) -> None:
    """Until a lifecycle run that started after ``moment`` has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs(site):
            started = datetime.fromisoformat(run["started_at"])
            if run["command"] == "run" and started > moment and run["finished_at"]:
                return
        time.sleep(5)
    raise SoakError(f"no lifecycle run started after {moment:%H:%M:%S} finished in {timeout} s")


def stored(site: Site, s3: Any) -> set[tuple[str, str]]:
    """(tier, key) of every object the two stores hold (shelflife's own folders aside)."""
    found = {
        ("local", path.relative_to(site.local).as_posix())
        for path in site.local.rglob("*")
        if path.is_file()
    }
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=site.bucket, Prefix="archive/"):
        for item in page.get("Contents", []):
            found.add(("cloud", item["Key"].removeprefix("archive/")))
    return {(tier, key) for tier, key in found if not key.startswith(".shelflife")}


Place = tuple[str, str]  # (tier, key)


def catalog_stamps(site: Site) -> tuple[dict[Place, datetime], dict[Place, datetime]]:
    """When each object may first be collected as far as the catalog says (its created
    instant plus the grace, and not before it arrived on its tier), and when each upload
    lease ends."""
    from sqlalchemy import create_engine, select

    from shelflife.catalog.schema import leases, objects

    engine = create_engine(site.catalog_url)
    columns = (objects.c.tier, objects.c.key, objects.c.created_at, objects.c.arrived_at)
    with engine.connect() as conn:
        earliest = {
            (tier, key): max(created + site.grace, arrived or created)
            for tier, key, created, arrived in conn.execute(select(*columns))
        }
        leased: dict[Place, datetime] = {}
        for tier, key, until in conn.execute(
            select(leases.c.tier, leases.c.key, leases.c.expires_at)
        ):
            leased[(tier, key)] = max(until, leased.get((tier, key), until))
    engine.dispose()
    return earliest, leased


# -- the checks -------------------------------------------------------------------------------


def check_rows(site: Site, app: Application, s3: Any, failures: list[str]) -> dict[str, int]:
    """Every row's location holds the bytes written; every blanked row was tmp/."""
    from sqlalchemy import create_engine

    engine = create_engine(site.app_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, name, location, sha256 FROM assets").all()
    engine.dispose()
    figures = Counter[str]()
    present = {int(row.id) for row in rows}
    for row in rows:
        if row.location is None:
            if int(row.id) in app.live and not row.name.startswith("tmp/"):
                failures.append(f"row {row.id} ({row.name}) was blanked, but not under tmp/")
                figures["lost"] += 1
            continue
        figures["rows"] += 1
        data = fetch(site, s3, row.location)
        if data is None:
            failures.append(f"row {row.id} points at {row.location}, which holds no object")
            figures["dangling"] += 1
        elif hashlib.sha256(data).hexdigest() != row.sha256:
            failures.append(f"row {row.id} points at {row.location}, which holds other bytes")
            figures["lost"] += 1
    for row_id, tracked in app.live.items():
        if row_id not in present:
            failures.append(f"row {row_id} ({tracked.key}) was deleted by someone else")
            figures["lost"] += 1
    return {"rows": figures["rows"], "lost": figures["lost"], "dangling": figures["dangling"]}


def check_orphans(
    site: Site, app: Application, s3: Any, history: list[dict[str, Any]], failures: list[str]
) -> dict[str, int]:
    """No object that a finished run found eligible for collection is still there."""
    from sqlalchemy import create_engine

    engine = create_engine(site.app_url)
    with engine.connect() as conn:
        values = conn.exec_driver_sql("SELECT location FROM assets WHERE location IS NOT NULL")
        referenced = {place for (value,) in values if (place := parse(site, value))}
    engine.dispose()
    earliest, leased = catalog_stamps(site)
    starts = sorted(
        datetime.fromisoformat(run["started_at"])
        for run in history
        if run["command"] == "run" and run["status"] == "ok"
    )
    figures = Counter[str]()
    for place in sorted(stored(site, s3) - referenced):
        tier, key = place
        figures["orphans_left"] += 1
        if place not in earliest:
            failures.append(f"{tier}/{key}: an orphan the catalog does not know")
            continue
        eligible = max(
            earliest[place],
            leased.get(place, earliest[place]),
            app.orphaned.get(key, earliest[place]),
        )
        missed = [start for start in starts if start >= eligible + SLACK]
        if missed:
            figures["uncollected"] += 1
            failures.append(
                f"{tier}/{key}: an orphan eligible since {eligible:%H:%M:%S} outlived "
                f"{len(missed)} run(s), the first started at {missed[0]:%H:%M:%S}"
            )
    return dict(figures)


def check_runs(history: list[dict[str, Any]], failures: list[str]) -> dict[str, int]:
    figures = Counter[str]()
    for run in history:
        figures[f"runs_{run['status']}"] += 1
        if run["command"] == "run":
            figures["runs"] += 1
        for action, totals in (run.get("totals") or {}).items():
            figures[action] += int(totals["objects"])
        if run["status"] == "ok":
            continue
        reasons = [f.get("reason") or f.get("error") or f.get("detail") for f in run["failures"]]
        if run["status"] == "partial" and (run["error"] or (reasons and all(reasons))):
            continue
        failures.append(
            f"run {run['run_id']} ended {run['status']} ({run['error'] or 'no reason given'})"
        )
    return dict(figures)


def check_logs(site: Site, failures: list[str]) -> dict[str, int]:
    figures = {"errors": 0, "warnings": 0}
    for name in ("daemon", "serve"):
        for line in site.logs[name].read_text(errors="replace").splitlines():
            if BAD_LINE.search(line):
                figures["errors"] += 1
                if figures["errors"] <= 20:
                    failures.append(f"{name}.log: {line[:300]}")
            elif " WARNING " in line:
                figures["warnings"] += 1
    return figures


# -- the soak ---------------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    tag = args.tag or uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"shelflife-soak-{tag}-"))
    site = Site(work, args.period, args.pg, tag)
    failures: list[str] = []
    try:
        site.start()
        sampler = Sampler({name: site.procs[name].pid for name in ("daemon", "serve")})
        sampler.thread.start()
        app = Application(site, args.rate, args.seed)
        began = time.monotonic()
        app.thread.start()
        print(f"soaking for {args.minutes:g} min (period {args.period} s) in {work}", flush=True)
        deadline = began + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
            for name, process in site.procs.items():
                if process.poll() is not None:
                    raise SoakError(f"{name} exited with code {process.returncode} mid-soak")
            if not args.quiet:
                minute = (time.monotonic() - began) / 60
                print(f"  {minute:5.1f} min: {dict(sorted(app.counts.items()))}", flush=True)
        app.close()
        stopped = now()
        # one more run, started after the load stopped, collects what became eligible
        wait_for_a_run_after(site, stopped, timeout=3 * args.period + 300)
        sampler.close()
        codes = {name: site.stop(name) for name in ("daemon", "serve")}
        for name, code in codes.items():
            if code not in (0, -signal.SIGTERM):
                failures.append(f"{name} did not stop cleanly on SIGTERM (exit code {code})")
        elapsed = time.monotonic() - began
        s3 = site.s3_client()
        history = runs(site)
        failures += [f"application: {problem}" for problem in app.problems[:20]]
        rows = check_rows(site, app, s3, failures)
        orphans = check_orphans(site, app, s3, history, failures)
        ran = check_runs(history, failures)
        logs = check_logs(site, failures)
        warm = min(300.0, elapsed / 3)  # minute 5, or a third of a short soak
        rss_start, rss_end, ratio = sampler.flatness("daemon", warm)
        serve_start, serve_end, serve_ratio = sampler.flatness("serve", warm)
        if ratio > RSS_LIMIT:
            failures.append(
                f"the daemon's RSS grew {ratio}× ({rss_start / 2**20:.1f} → "
                f"{rss_end / 2**20:.1f} MiB), above {RSS_LIMIT}×"
            )
        figures = {
            "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "minutes": round(elapsed / 60, 1),
            "period_seconds": args.period,
            "writes": app.counts["writes"],
            "uploads": app.counts["uploads"],
            "reads": app.counts["reads"],
            "read_retries": app.counts["read_retries"],
            "unreferenced": app.counts["unreferenced"] + app.counts["uploads_unreferenced"],
            "deletes": app.counts["deletes"],
            "runs": ran.get("runs", 0),
            "runs_ok": ran.get("runs_ok", 0),
            "runs_partial": ran.get("runs_partial", 0),
            "migrated": ran.get("migrate", 0),
            "expired": ran.get("expire", 0),
            "collected": ran.get("delete-orphan", 0),
            "rows_checked": rows["rows"],
            "lost": rows["lost"] + app.counts["lost_reads"],
            "dangling": rows["dangling"],
            "orphans_left": orphans.get("orphans_left", 0),
            "orphans_uncollected": orphans.get("uncollected", 0),
            "rss_start": rss_start,
            "rss_end": rss_end,
            "ratio": ratio,
            "rss_warm_up_seconds": round(warm),
            "serve_rss_start": serve_start,
            "serve_rss_end": serve_end,
            "serve_ratio": serve_ratio,
            "errors": logs["errors"] + app.counts["app_errors"],
            "warnings": logs["warnings"],
            "failed_checks": len(failures),
        }
        return figures, failures
    finally:
        site.close(keep=args.keep)
        if args.keep:
            print(f"kept {work} and the databases {site.app_db}, {site.catalog_db}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs")
    parser.add_argument(
        "--period",
        type=int,
        default=60,
        help="seconds between schedule firings (60, or divides 60)",
    )
    parser.add_argument("--rate", type=float, default=4.0, help="application operations a second")
    parser.add_argument("--seed", type=int, default=20, help="the application's random seed")
    parser.add_argument(
        "--pg", default=PG_ADMIN, help="a PostgreSQL URL allowed to create databases"
    )
    parser.add_argument("--tag", default="", help="names the databases and the bucket")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where the figures go")
    parser.add_argument(
        "--record", action="store_true", help=f"also write {RECORD.relative_to(ROOT)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder and the databases")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        cron(args.period)
        figures, failures = soak(args)
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(figures, indent=2) + "\n"
    args.output.write_text(text)
    if args.record:
        RECORD.write_text(text)
    print(text, end="")
    if failures:
        print(f"soak FAILED ({len(failures)} checks):", file=sys.stderr)
        for failure in failures[:50]:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"soak passed: figures in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
