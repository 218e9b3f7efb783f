"""The soak, short: scripts/soak.py for two minutes with the schedule firing every 15 s.

The script is the one the 30-minute soak runs (docs/reliability.md, "Soak"): the real
``shelflife daemon`` and ``shelflife serve``, a moto S3 tier and a local one, PostgreSQL
for the catalog and the application, an application writing, uploading, reading,
un-referencing and deleting all along. The script does the checking and exits 1 naming
each check that failed; this test runs it and keeps its figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.extras import core_skip
from tests.support.figures import Figures

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.s3, pytest.mark.postgres, pytest.mark.timeout(600)]


@pytest.mark.invariant("I1", "I2", "I3")
def test_two_minutes_of_daemon_under_load(tmp_path: Path, figures: Figures) -> None:
    """Two minutes of `shelflife daemon` running the lifecycle every 15 s while an
    application writes, uploads, reads, un-references and deletes: every row's object
    intact, no row dangling, every orphan a run found eligible collected, no error in the
    logs, every run ended ok, the daemon's memory flat."""
    core_skip("the soak (moto's S3 server, PostgreSQL)", "s3")
    output = tmp_path / "soak.json"
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--minutes", "2"]
    command += ["--period", "15", "--output", str(output), "--quiet"]
    command += ["--tag", f"t{uuid.uuid4().hex[:8]}"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=540, check=False, env=environment
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    soaked = json.loads(output.read_text())
    assert soaked["lost"] == soaked["dangling"] == soaked["orphans_uncollected"] == 0
    assert soaked["errors"] == 0
    # the load and the rules did happen: something of each kind was tried
    for name in ("writes", "uploads", "reads", "unreferenced", "deletes", "runs"):
        assert soaked[name] > 0, name
    for name in ("migrated", "expired", "collected"):
        assert soaked[name] > 0, name
    assert soaked["runs"] == soaked["runs_ok"] + soaked["runs_partial"]
    assert soaked["ratio"] <= 1.2
    figures.add(
        "soak, short (2 min, lifecycle every 15 s)",
        writes=soaked["writes"],
        uploads=soaked["uploads"],
        reads=soaked["reads"],
        deletes=soaked["deletes"] + soaked["unreferenced"],
        runs=soaked["runs"],
        migrated=soaked["migrated"],
        expired=soaked["expired"],
        collected=soaked["collected"],
        lost=soaked["lost"],
        dangling=soaked["dangling"],
    )
