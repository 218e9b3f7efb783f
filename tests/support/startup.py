"""The start-up import contract, shared by tests/test_startup.py and bench/startup.py:
which modules a command that only prints help (or writes the starter config) must not
load, and a probe that reports ``sys.modules`` after the CLI handled some arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# What commands that touch stores, catalogs or servers load. Matched as a module or any
# of its submodules.
HEAVY = (
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "obstore",
    "celery",
    "kombu",
    "boto3",
    "botocore",
    "azure",
    "prometheus_client",
    "croniter",
    "alembic",
    "psycopg",
    "pymysql",
    "shelflife.config.model",
    "shelflife.service",
    "shelflife.catalog",
    "shelflife.stores",
    "shelflife.engine",
    "shelflife.api",
    "shelflife.workers",
)
# ``shelflife --help`` alone also loads neither Rich (help is rendered plainly) nor
# pydantic: Typer converts option values through pydantic, and ``--help`` converts none.
# ``shelflife <command> --help`` converts the global options, so it does load pydantic.
HELP_ALSO = ("rich", "pydantic", "pydantic_core")

# (arguments, modules they must not load)
CONTRACT: list[tuple[list[str], tuple[str, ...]]] = [
    (["--help"], HEAVY + HELP_ALSO),
    (["init", "--help"], HEAVY),
    (["stats", "--help"], HEAVY),
    (["init"], HEAVY),
]

PROBE = """
import json, sys
from shelflife.cli import run
code = run(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded_modules(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """``sys.modules`` after the CLI handled ``argv`` in a fresh interpreter (exit 0)."""
    environment = env if env is not None else dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"shelflife {' '.join(argv)} failed: {result.stderr[-2000:]}")
    body = json.loads(lines[-1])
    if body["code"] != 0:
        raise RuntimeError(f"shelflife {' '.join(argv)} exited {body['code']}: {result.stderr}")
    return list(body["modules"])


def offending(modules: list[str], banned: tuple[str, ...]) -> list[str]:
    """The loaded modules that are, or are under, one of ``banned``."""
    return sorted(
        name for name in modules if any(name == b or name.startswith(b + ".") for b in banned)
    )
