"""Extras: the core install runs file:// + SQLite + the CLI; everything else is an extra, and
a missing one is an error naming the ``pip install`` to run.

The full run checks the mapping against pyproject.toml and drives the real CLI in a
subprocess whose imports of an extra's modules fail (as they do in a venv without it). The
core-only run (``SHELFLIFE_CORE_ONLY=1``, a venv with ``pip install -e .`` only) checks that
the venv really lacks every extra and that the main commands work there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shelflife.base.extras import EXTRA_OF, needs, require
from shelflife.errors import MissingExtraError
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.extras import CORE_ONLY

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
FEATURE_EXTRAS = sorted(set(EXTRAS) - {"all", "test"})

# the top-level module each extra's distributions install (distribution name → module)
MODULE_OF = {
    "boto3": "boto3",
    "azure-storage-blob": "azure",
    "psycopg": "psycopg",
    "pymysql": "pymysql",
    "fastapi": "fastapi",
    "fastapi-offline": "fastapi_offline",
    "uvicorn": "uvicorn",
    "prometheus-client": "prometheus_client",
    "python-multipart": "multipart",
    "celery": "celery",
    "django": "django",
    "fsspec": "fsspec",
}


def _distribution(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower()


def test_every_extra_package_maps_to_its_extra() -> None:
    """What pyproject installs per extra is what the error for a missing module names."""
    assert {"s3", "azure", "gcs", "postgres", "mysql", "server", "celery", "django"} <= set(
        FEATURE_EXTRAS
    )
    for extra in FEATURE_EXTRAS:
        for requirement in EXTRAS[extra]:
            distribution = _distribution(requirement)
            module = MODULE_OF.get(distribution)
            assert module is not None, f"{distribution} (extra {extra}) has no module in MODULE_OF"
            assert EXTRA_OF.get(module) == extra, (module, extra)
    assert EXTRAS["gcs"] == []  # obstore speaks GCS itself


def test_all_installs_every_extra_and_test_installs_all() -> None:
    (everything,) = EXTRAS["all"]
    named = set(re.search(r"\[(.*)\]", everything).group(1).split(","))  # type: ignore[union-attr]
    assert named == set(FEATURE_EXTRAS)
    assert "shelflife[all]" in EXTRAS["test"]


def test_core_dependencies_hold_no_extra_and_nothing_unused() -> None:
    core = {_distribution(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not core & set(MODULE_OF), core & set(MODULE_OF)
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "shelflife").rglob("*.py"))
    module_of_core = {"tomli-w": "tomli_w"}
    for distribution in core:
        module = module_of_core.get(distribution, distribution.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), (
            f"{distribution} is a core dependency that nothing imports"
        )


def test_needs_turns_a_missing_extra_into_a_clear_error() -> None:
    with pytest.raises(MissingExtraError) as caught, needs("an s3:// tier"):
        raise ModuleNotFoundError("No module named 'boto3'", name="boto3")
    assert caught.value.exit_code == 2
    assert caught.value.message == "an s3:// tier needs the 's3' extra (boto3 is not installed)"
    assert caught.value.hint == "pip install 'shelflife[s3]'"
    # a module no extra installs is a bug, reported as it is
    with pytest.raises(ModuleNotFoundError), needs("anything"):
        raise ModuleNotFoundError("No module named 'nonexistent'", name="nonexistent")
    assert require("json", "anything") is json


# A subprocess in which the named top-level modules cannot be imported, as in a venv that
# lacks their extra; it then runs the real console script's entry point.
_BLOCKING = """
import sys
from importlib.abc import MetaPathFinder
blocked = set(sys.argv[1].split(","))
class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = ["shelflife", *sys.argv[2:]]
from shelflife.cli import main
main()
"""


def _without(
    modules: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHELFLIFE_")}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKING, modules, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "local").mkdir(exist_ok=True)
    path = tmp_path / "shelflife.toml"
    path.write_text(
        f'[catalog]\nurl = "sqlite:///{tmp_path / "catalog.db"}"\n'
        f'[tiers.local]\nurl = "file://{tmp_path / "local"}"\n' + body
    )
    return path


@pytest.mark.parametrize(
    ("modules", "body", "args", "extra"),
    [
        (
            "boto3,botocore",
            '[tiers.cloud]\nurl = "s3://bucket/x"\nendpoint = "http://127.0.0.1:9"\n',
            ["ls", "--tier", "cloud"],
            "s3",
        ),
        (
            "azure",
            '[tiers.cloud]\nurl = "az://container"\naccess_key = "a"\n'
            'endpoint = "http://127.0.0.1:9/a"\n',
            ["ls", "--tier", "cloud"],
            "azure",
        ),
        ("uvicorn,fastapi,starlette", "", ["serve", "--port", "9"], "server"),
        ("uvicorn,fastapi,starlette", "", ["daemon", "--port", "9"], "server"),
        (
            "psycopg,psycopg2",
            '[databases.app]\nurl = "postgresql+psycopg://u@127.0.0.1:9/app"\n'
            '[[references]]\ndatabase = "app"\ntable = "t"\ncolumn = "c"\n',
            ["scan"],
            "postgres",
        ),
        ("celery,kombu", '[executor]\nbackend = "celery"\n', ["run", "--yes"], "celery"),
    ],
    ids=["s3", "azure", "serve", "daemon", "postgres-database", "celery"],
)
def test_a_command_needing_a_missing_extra_names_the_install(
    tmp_path: Path, modules: str, body: str, args: list[str], extra: str
) -> None:
    config = _config(tmp_path, body)
    result = _without(modules, "-c", str(config), *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"needs the '{extra}' extra" in result.stderr
    assert f"pip install 'shelflife[{extra}]'" in result.stderr


def test_a_postgresql_catalog_without_its_driver_names_the_install(tmp_path: Path) -> None:
    config = tmp_path / "shelflife.toml"
    (tmp_path / "local").mkdir()
    config.write_text(
        '[catalog]\nurl = "postgresql://u@127.0.0.1:9/catalog"\n'
        f'[tiers.local]\nurl = "file://{tmp_path / "local"}"\n'
    )
    result = _without("psycopg,psycopg2", "-c", str(config), "stats", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "a postgresql catalog needs the 'postgres' extra" in result.stderr
    assert "pip install 'shelflife[postgres]'" in result.stderr


def test_check_lists_a_missing_extra_as_a_failed_component(tmp_path: Path) -> None:
    config = _config(
        tmp_path, '[tiers.cloud]\nurl = "s3://bucket/x"\nendpoint = "http://127.0.0.1:9"\n'
    )
    result = _without("boto3,botocore", "-c", str(config), "check", "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    checks = json.loads(result.stdout)["checks"]
    cloud = next(c for c in checks if c["name"] == "cloud")
    assert not cloud["ok"]
    assert "needs the 's3' extra" in cloud["message"]
    assert cloud["hint"] == "pip install 'shelflife[s3]'"
    local = next(c for c in checks if c["name"] == "local")
    assert local["ok"], local


@pytest.mark.skipif(not CORE_ONLY, reason="the core-only run checks its own venv")
def test_the_core_venv_holds_no_extra() -> None:
    present = [m for m in sorted(set(EXTRA_OF)) if importlib.util.find_spec(m) is not None]
    assert present == [], f"the core-only venv has modules of extras: {present}"


def test_the_main_commands_work_on_file_tiers_and_sqlite(tmp_path: Path) -> None:
    """In the core venv (and everywhere): put, ls, get, scan, plan, run, stats, check."""
    config = _config(tmp_path, "")
    source = tmp_path / "report.txt"
    source.write_bytes(b"quarterly figures\n")
    assert shelflife("-c", str(config), "put", str(source), "docs/report.txt", cwd=tmp_path)
    for args in (
        ["ls"],
        ["scan"],
        ["plan", "--json"],
        ["run", "--yes"],
        ["stats", "--json"],
        ["get", "docs/report.txt", str(tmp_path / "copy.txt")],
    ):
        result = shelflife("-c", str(config), *args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert (tmp_path / "copy.txt").read_bytes() == b"quarterly figures\n"
    assert Path(SHELFLIFE).exists()


def test_a_url_naming_a_driver_no_extra_installs_says_which_form_to_write() -> None:
    with pytest.raises(MissingExtraError) as caught, needs("[databases.app]"):
        raise ModuleNotFoundError("No module named 'psycopg2'", name="psycopg2")
    assert caught.value.hint is not None
    assert "postgresql+psycopg://" in caught.value.hint


@pytest.mark.parametrize("which", ["postgresql", "mariadb"])
def test_a_database_url_without_a_driver_uses_the_installed_one(
    which: str, request: pytest.FixtureRequest
) -> None:
    """``postgresql://`` and ``mysql://`` would make SQLAlchemy import psycopg2 / MySQLdb,
    which no extra installs: they get psycopg 3 and PyMySQL."""
    from sqlalchemy import text

    from shelflife.config.model import Config
    from shelflife.references.sources import Databases, database_url
    from shelflife.service.checks import check_database

    full = str(request.getfixturevalue("pg_url" if which == "postgresql" else "mariadb_url"))
    bare = re.sub(r"^(postgresql|mysql)\+\w+://", r"\1://", full)
    assert bare != full
    assert str(database_url(bare)).split("://")[0] in ("postgresql+psycopg", "mysql+pymysql")
    config = Config.model_validate(
        {"tiers": {"local": {"url": "file:///tmp/x"}}, "databases": {"app": {"url": bare}}}
    )
    databases = Databases(config)
    try:
        with databases.engine("app").connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        databases.dispose()
    assert check_database("app", bare).ok
