"""``shelflife demo``: a small sample application to run shelflife against.

It mimics a render service: a SQLite application database whose ``video_jobs`` rows
point at output files on the local tier, written over the last few months, plus a few
files no row points at (left behind by deleted jobs). The local tier's capacity is set
small so the sample starts above its high watermark; the demo's lifecycle pass collects
the orphans, expires outputs past their retention and ends below the low watermark.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shelflife.base.units import utcnow
from shelflife.errors import UsageError

MARKER = ".shelflife-demo"
ROWS = 40
ORPHANS = 8

CONFIG = """\
# The demo's configuration: written by 'shelflife demo', safe to edit and re-run.
[catalog]
url = "sqlite:///shelflife.db"

[databases.app]
url = "sqlite:///app.db"

[tiers.local]
url = "file://data/storage/outputs"
ref_format = "data/storage/outputs/{key}"
capacity = "1.6MB"
high_watermark = "80%"
low_watermark = "70%"

[tiers.cloud]
url = "file://data/storage/cold"
ref_format = "data/storage/cold/{key}"

[[references]]
database = "app"
table = "video_jobs"
column = "output_path"
on_expire = "null"

# Rules apply in file order; what an earlier rule removes counts as freed for later ones.
[[rules]]
id = "orphans"
tier = "*"
action = "collect-orphans"
grace = "7d"                # files younger than this are never collected
mode = "quarantine"         # moved under .shelflife-trash/; 'shelflife restore KEY' undoes it
quarantine_days = 7
max_fraction = 0.25

[[rules]]
id = "retention"
tier = "*"
action = "expire"
after = "100d"              # rows of expired outputs get output_path = NULL (on_expire)

[[rules]]
id = "keep-local-under-watermark"
tier = "local"
action = "migrate"
to = "cloud"
when = "over-watermark"
order = "oldest"
"""


@dataclass(frozen=True, slots=True)
class DemoApp:
    directory: Path
    config_path: Path
    rows: int
    orphans: int


def build_demo(directory: Path, *, seed: int = 7) -> DemoApp:
    """Create (or re-create) the sample application under ``directory``."""
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise UsageError(
            f"{directory} exists and is not a shelflife demo",
            hint="pass --dir with an empty or new folder",
        )
    if directory.exists():
        shutil.rmtree(directory)
    outputs = directory / "data" / "storage" / "outputs"
    outputs.mkdir(parents=True)
    (directory / "data" / "storage" / "cold").mkdir(parents=True)
    (directory / MARKER).write_text("built by shelflife demo\n")
    (directory / "shelflife.toml").write_text(CONFIG)

    rng = random.Random(seed)
    now = utcnow()
    db = sqlite3.connect(directory / "app.db")
    db.executescript(
        """
        CREATE TABLE video_jobs (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            output_path TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX ix_video_jobs_output_path ON video_jobs (output_path);
        """
    )
    for number in range(ROWS + ORPHANS):
        age = timedelta(days=rng.uniform(0, 120))
        key = f"renders/{(now - age):%Y/%m}/job-{number:04d}.mp4"
        path = outputs / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(20_000, 60_000)))
        stamp = (now - age).timestamp()
        os.utime(path, (stamp, stamp))
        if number < ROWS:
            db.execute(
                "INSERT INTO video_jobs (title, output_path, created_at) VALUES (?, ?, ?)",
                (f"render {number}", f"data/storage/outputs/{key}", (now - age).isoformat()),
            )
    db.commit()
    db.close()
    return DemoApp(directory, directory / "shelflife.toml", ROWS, ORPHANS)
