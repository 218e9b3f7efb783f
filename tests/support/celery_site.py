"""A small application fanned out to Celery workers: its files, rows and configuration
(tests/test_celery.py, tests/test_scaleout_faults.py), and the checks of its end state."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from shelflife.base.units import utcnow
from tests.support.cli import SHELFLIFE

CELERY = str(Path(SHELFLIFE).parent / "celery")
OBJECTS = 48


@dataclass
class Env:
    base: Path
    config: Path
    originals: dict[str, str]  # key → sha256 of the bytes a row points at


def build(
    base: Path, catalog: str, *, celery: str | None = None, seed: int = 5, executor: str = ""
) -> Env:
    """An application with OBJECTS rows, orphans and old outputs, on two local tiers."""
    rng = random.Random(seed)
    (base / "outputs").mkdir(parents=True)
    (base / "cold").mkdir()
    app = base / "app.db"
    engine = create_engine(f"sqlite:///{app}")
    old = (utcnow().timestamp()) - 10 * 86400
    very_old = (utcnow().timestamp()) - 200 * 86400
    originals = {}
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT)"))
        conn.execute(text("CREATE INDEX ix_jobs_path ON jobs (path)"))
        for i in range(OBJECTS + 6):
            key = f"r/{i:03d} ä.bin"
            data = rng.randbytes(500 + 17 * i)
            path = base / "outputs" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            stamp = very_old if i % 8 == 0 else old
            os.utime(path, (stamp, stamp))
            if i < OBJECTS:  # the last six are orphans
                conn.execute(text("INSERT INTO jobs (path) VALUES (:p)"), {"p": f"data/out/{key}"})
                originals[key] = hashlib.sha256(data).hexdigest()
    engine.dispose()
    backend = ""
    if celery:
        broker, results = celery.split(" ")
        backend = f"""
[executor]
backend = "celery"
batch_size = 4
{executor}
[celery]
broker_url = "{broker}"
result_backend = "{results}"
queue = "q-{base.name}"
batch_queue = "b-{base.name}"
"""
    config = base / "shelflife.toml"
    config.write_text(f"""
[catalog]
url = "{catalog}"
[databases.app]
url = "sqlite:///{app}"
[tiers.local]
url = "file://outputs"
create = true
ref_format = "data/out/{{key}}"
[tiers.cloud]
url = "file://cold"
create = true
ref_format = "cold/{{key}}"
[[references]]
database = "app"
table = "jobs"
column = "path"
on_expire = "null"
[[rules]]
id = "orphans"
tier = "*"
action = "collect-orphans"
grace = "1d"
max_fraction = 0.5
[[rules]]
id = "retention"
tier = "local"
action = "expire"
after = "100d"
[[rules]]
id = "cold"
tier = "local"
action = "migrate"
to = "cloud"
after = "1d"
{backend}
""")
    return Env(base, config, originals)


def end_state(env: Env) -> dict[str, object]:
    """Every object's bytes per tier, and every row's value."""
    files = {}
    for tier in ("outputs", "cold"):
        for path in sorted((env.base / tier).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                files[f"{tier}/{path.relative_to(env.base / tier)}"] = digest
    engine = create_engine(f"sqlite:///{env.base / 'app.db'}")
    with engine.connect() as conn:
        rows = [r[0] for r in conn.execute(text("SELECT path FROM jobs ORDER BY id"))]
    engine.dispose()
    return {"files": files, "rows": rows}


def check_invariants(env: Env) -> None:
    """DESIGN I1: every row resolves to an object with the bytes it had."""
    state = end_state(env)
    files = state["files"]
    assert isinstance(files, dict)
    rows = state["rows"]
    assert isinstance(rows, list)
    for value in rows:
        if value is None:
            continue  # expired (on_expire = "null")
        tier, key = ("cold", value[5:]) if value.startswith("cold/") else ("outputs", value[9:])
        assert files.get(f"{tier}/{key}") == env.originals[key], value
