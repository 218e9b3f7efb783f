"""kill -9 at every journal step, and at random points: after ``recover`` every row resolves
to an object with its original bytes, no object is lost, none exists twice (DESIGN I1, I2).

Each case runs ``shelflife enforce`` in a subprocess that SIGKILLs itself at a checkpoint
(``SHELFLIFE_KILL_AT``), sometimes kills the following ``shelflife recover`` too, then
recovers and checks the invariants. Three environments: file → file with SQLite rows,
file → S3 (moto) with PostgreSQL rows, file → Azure (Azurite) with MariaDB rows.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.catalog.journal import Journal
from shelflife.errors import ObjectNotFound
from tests.support.apps import AppTable
from tests.support.cli import SHELFLIFE
from tests.support.figures import Figures
from tests.support.objects import read
from tests.support.servers import tier_config

# Two batches of 4: killing at every checkpoint of both reaches every journaled step in a
# first batch (work still pending after it) and in a last one (a finished batch before it);
# a third or fourth batch would pass the same steps with the same state around them again.
OBJECTS = 8
CHECKPOINTS_PER_BATCH_OF_4 = 11  # journal-copying, 4 x copied-object, 7 batch-level steps
RANDOM_POINTS = 8  # batches of one object, killed anywhere: the steps in another order


@dataclass
class Env:
    base: Path
    config: Path
    app: AppTable
    originals: dict[str, str]


def build(base: Path, dst: dict[str, Any], app_url: str, batch_size: int) -> Env:
    base.mkdir(parents=True)
    app = AppTable(app_url)
    local = base / "local"
    originals = {}
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    values = []
    for i in range(OBJECTS):
        key = f"run/{i:02d} ä.bin"
        data = os.urandom(200 + 37 * i)
        path = local / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (old, old))
        originals[key] = hashlib.sha256(data).hexdigest()
        values.append(f"data/out/{key}")
        if i % 3 == 0:
            values.append(f"/workspace/out/{key}")  # a second row, in the alias spelling
    app.insert(*values)
    dst_lines = "\n".join(f"{k} = {_toml(v)}" for k, v in dst.items())
    config = base / "shelflife.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[executor]
batch_size = {batch_size}
concurrency = 4
[databases.app]
url = "{app_url}"
[tiers.local]
url = "file://local"
create = true
ref_format = "data/out/{{key}}"
ref_aliases = ["/workspace/out/{{key}}"]
[tiers.cloud]
{dst_lines}
[[references]]
database = "app"
table = "{app.name}"
column = "path"
[[rules]]
id = "age-out"
tier = "local"
action = "migrate"
to = "cloud"
after = "1d"
""")
    with Shelf.open(config) as shelf:
        shelf.scan()
    return Env(base, config, app, originals)


def _toml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower()


def run(env: Env, command: str, kill_at: str | None) -> int:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    if kill_at:
        environ["SHELFLIFE_KILL_AT"] = kill_at
    result = subprocess.run(
        [SHELFLIFE, "-c", str(env.config), command],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, -9), result.stderr
    assert "Traceback" not in result.stderr
    return result.returncode


def check(env: Env) -> None:
    with Shelf.open(env.config) as shelf:
        assert Journal(shelf.catalog.engine).unfinished() == []
        for value in env.app.values():
            location = shelf.locator.parse(value)
            assert location is not None, value
            try:
                data = read(shelf, location.tier, location.key)
            except ObjectNotFound:
                message = f"row {value!r} points at a location without the object"
                raise AssertionError(message) from None
            assert hashlib.sha256(data).hexdigest() == env.originals[location.key], value
        for key in env.originals:
            holders = [tier for tier in ("local", "cloud") if _exists(shelf, tier, key)]
            assert len(holders) == 1, f"{key} is on {holders}"


def _exists(shelf: Shelf, tier: str, key: str) -> bool:
    try:
        read(shelf, tier, key)
    except ObjectNotFound:
        return False
    return True


def crash_case(env: Env, kill_at: str, kill_recovery: bool) -> int:
    kills = 1 if run(env, "enforce", kill_at) == -9 else 0
    if kill_recovery and kills:
        kills += 1 if run(env, "recover", "*:1") == -9 else 0
    with Shelf.open(env.config) as shelf:
        shelf.recover()
    check(env)
    # A following run finishes the work. It runs in this process: only the killed runs
    # need a process of their own, and this one is the same pipeline `shelflife enforce`
    # runs (its status "ok" is the command's exit 0).
    with Shelf.open(env.config) as shelf:
        outcome = shelf.enforce()
        assert outcome.status == "ok", outcome.as_json()
    check(env)
    with Shelf.open(env.config) as shelf:
        assert all(tier == "cloud" for tier in (shelf.resolve(k).tier for k in env.originals))
    env.app.dispose()
    return kills


ENVIRONMENTS = [
    ("file", "sqlite"),
    pytest.param("s3", "postgresql", marks=pytest.mark.s3),
    pytest.param("azure", "mariadb", marks=pytest.mark.azure),
]


@pytest.mark.invariant("I1", "I2")
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("dst_kind", "db_kind"), ENVIRONMENTS)
def test_kill_9_at_every_step_and_at_random_points_loses_nothing(
    dst_kind: str,
    db_kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    figures: Figures,
) -> None:
    """kill -9 at every journaled step of a migration and at random points, recovery
    killed too: nothing lost, no row dangling."""
    app_url = {
        "sqlite": lambda: None,
        "postgresql": lambda: request.getfixturevalue("pg_url"),
        "mariadb": lambda: request.getfixturevalue("mariadb_url"),
    }[db_kind]()
    rng = random.Random(f"{dst_kind}-{db_kind}")
    cases: list[tuple[str, int, bool]] = []
    every_step = CHECKPOINTS_PER_BATCH_OF_4 * OBJECTS // 4
    # recovery killed too after every third step: the journal then holds copying, copied,
    # repointing and deleting entries, and a batch boundary (n = 12)
    cases += [(f"*:{n}", 4, n % 3 == 0) for n in range(1, every_step + 1)]
    one_by_one = 8 * OBJECTS  # with batches of one object: 8 checkpoints each
    cases += [
        (f"*:{rng.randint(1, one_by_one)}", 1, rng.random() < 0.3) for _ in range(RANDOM_POINTS)
    ]

    def one(case: tuple[str, int, bool]) -> int:
        kill_at, batch_size, kill_recovery = case
        base = tmp_path / uuid.uuid4().hex[:8]
        dst = tier_config(dst_kind, request, base / "cold")
        if dst_kind == "file":
            dst["ref_format"] = "cold/{key}"
        url = app_url or f"sqlite:///{base / 'app.db'}"
        return crash_case(build(base, dst, url, batch_size), kill_at, kill_recovery)

    for kind in ("s3", "azure"):  # start shared servers before the threads need them
        if dst_kind == kind:
            tier_config(kind, request, tmp_path / "warm")
    with ThreadPoolExecutor(max_workers=3) as pool:
        kills = sum(pool.map(one, cases))
    print(f"{dst_kind}+{db_kind}: {kills} kills across {len(cases)} runs")
    assert kills >= len(cases)  # every case killed at least the run
    figures.add("kill -9 mid-migration", runs=len(cases), kills=kills, lost=0, dangling=0)
