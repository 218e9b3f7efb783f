"""The documents in docs/ say what the tool does: the configuration reference is the one
the models generate, and the MinIO tutorial runs as written."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.cli import SHELFLIFE
from tests.support.servers import s3_client

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCRIPT = ROOT / "scripts" / "config_reference.py"


def test_configuration_reference_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--stdout"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == result.stdout, (
        "docs/configuration.md is not what the config models say now: "
        "run `.venv/bin/python scripts/config_reference.py` and commit the result"
    )


def test_configuration_reference_covers_every_key() -> None:
    from pydantic import BaseModel

    from shelflife.config.model import Config

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")

    def walk(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            assert field.description, f"{model.__name__}.{name} has no description"
            assert f"`{name}`" in text, f"{model.__name__}.{name} is not in the reference"
            for inner in re.findall(r"\b([A-Z]\w+Config|RuleFilter)\b", str(field.annotation)):
                walk(getattr(sys.modules[model.__module__], inner), seen)

    walk(Config, set())


# --- docs/minio.md ---------------------------------------------------------------------

MINIO = "http://127.0.0.1:9000"
BUCKET = "tutorial-media"
# Lines the test does not run, and what stands in for them.
NOT_RUN = {
    "python3 -m venv": "the test's own environment, where shelflife is installed",
    "pip install": "the same",
    "docker ": "the moto S3 server of the s3_endpoint fixture",
}


def tutorial_script(text: str, endpoint: str, bucket: str) -> tuple[str, list[str]]:
    """The tutorial's shell blocks as one script (its TOML block written where it
    appears), with the endpoint and bucket substituted; and the lines left out."""
    lines: list[str] = []
    skipped: list[str] = []
    for language, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL):
        if language == "toml":
            lines += ["cat > shelflife.toml <<'TOML'", body.rstrip("\n"), "TOML"]
            continue
        assert language == "sh", f"a code block without a language: {body[:60]!r}"
        continuing = False
        for line in body.rstrip("\n").split("\n"):
            if continuing or any(line.startswith(prefix) for prefix in NOT_RUN):
                skipped.append(line)
                continuing = line.endswith("\\")
                continue
            lines.append(line)
    script = "\n".join(lines).replace(MINIO, endpoint).replace(BUCKET, bucket)
    return script, skipped


@pytest.mark.s3
def test_minio_tutorial_runs_as_written(tmp_path: Path, s3_endpoint: str) -> None:
    text = (DOCS / "minio.md").read_text(encoding="utf-8")
    assert "pip install 'shelflife[s3]'" in text
    bucket = f"tutorial-{uuid.uuid4().hex[:12]}"
    script, skipped = tutorial_script(text, s3_endpoint, bucket)
    assert [line.split()[0] for line in skipped] == [
        "python3",
        "pip",
        "docker",
        "-e",
        "minio/minio:RELEASE.2025-04-22T22-12-26Z",
        "docker",
    ], skipped
    assert "shelflife" in script
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
    }
    environment["PATH"] = f"{Path(SHELFLIFE).parent}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-x", "-c", script],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert "Traceback" not in result.stderr, result.stderr
    work = tmp_path / "shelflife-tutorial"

    # What the tutorial says happened, happened.
    rows = [p for (p,) in sqlite3.connect(work / "app.db").execute("SELECT path FROM uploads")]
    prefix = f"s3://{bucket}/photos-archive/photos/"
    moved = {f"{i:03}.jpg" for i in range(13)}
    orphans = {f"{i:03}.jpg" for i in range(20) if i % 4 == 3}
    assert sorted(rows) == sorted(
        [prefix + name for name in sorted(moved - orphans - {"000.jpg"})]
        + [f"media/photos/{i:03}.jpg" for i in range(13, 20) if i % 4 != 3]
    )
    local = {p.name for p in (work / "media" / "photos").iterdir()}
    assert local == {f"{i:03}.jpg" for i in range(13, 20)}
    listing = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket)
    keys = {item["Key"] for item in listing.get("Contents", [])}
    live = {k.removeprefix("photos-archive/photos/") for k in keys if "/.shelflife-trash/" not in k}
    trashed = [k for k in keys if ".shelflife-trash/" in k]
    # The three moved orphans stay quarantined; photos/000.jpg was restored.
    assert live == moved - orphans | {"000.jpg"}, keys
    assert len(trashed) == 3, keys
    assert "photos/000.jpg" in result.stdout  # the ls at the end
