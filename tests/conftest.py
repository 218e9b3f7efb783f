"""Fixtures that start real servers: moto's S3 server, Azurite, gcp-storage-emulator, a
PostgreSQL database.

Each server runs once per test session on a free loopback port; buckets and containers
are created per test, so tests never see each other's objects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.extras import CORE_ONLY, core_skip
from tests.support.figures import _FIGURES, Figures
from tests.support.servers import (
    AZURE_ACCOUNT,
    GCS_CLIENT_EMAIL,
    free_port,
    make_azure_container,
    make_gcs_bucket,
    make_s3_bucket,
    wait_for_port,
    write_gcs_service_account,
)

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".cache" / "node" / "node_modules" / ".bin" / "azurite-blob"
PG_ADMIN_URL = os.environ.get(
    "SHELFLIFE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server over HTTP on a free port."""
    core_skip("the S3 server", "s3")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    beside = Path(sys.executable).parent / "moto_server"
    binary = str(beside) if beside.exists() else shutil.which("moto_server") or "moto_server"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    wait_for_port(port, process, "moto_server")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def azure_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service over HTTP on a free port."""
    core_skip("Azurite", "azure")
    if not AZURITE.exists():
        pytest.fail(
            f"Azurite is not installed at {AZURITE}: run scripts/test.sh, which installs it"
        )
    port = free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    with (workdir / "azurite.log").open("wb") as out:
        process = subprocess.Popen(
            [
                str(AZURITE),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    wait_for_port(port, process, "azurite")
    yield f"http://127.0.0.1:{port}/{AZURE_ACCOUNT}"
    process.terminate()
    process.wait(10)


# -- the core-only run ------------------------------------------------------------------------
# CI also runs the suite in a venv with the core install only (`pip install -e .`, no extra):
# SHELFLIFE_CORE_ONLY=1. There, a test module that imports an extra (or a test tool only the
# full run installs) at its top is not collected, and the fixtures that start a server only
# an extra can reach skip, naming it; everything else — file:// tiers, SQLite, the CLI — runs.


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not CORE_ONLY or collection_path.suffix != ".py" or collection_path.name == "conftest.py":
        return None
    import importlib

    module = ".".join(collection_path.relative_to(ROOT).with_suffix("").parts)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("tests", "shelflife"):
            raise  # a broken import of the project's own, not a missing package
        return True
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("extra"):
        for extra in mark.args:
            core_skip(f"{item.name} (it asks for it by name)", extra)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "extra(*names): needs these extras; skipped in the core-only run"
    )
    config.addinivalue_line(
        "markers", "gcs: needs gcp-storage-emulator (behind tests/support/gcs_gateway.py)"
    )


@pytest.fixture(scope="session")
def gcs_credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service-account key file every gs:// tier of the session uses."""
    path = tmp_path_factory.mktemp("gcs-account") / "service-account.json"
    write_gcs_service_account(path)
    return path


# `gcp-storage-emulator start`, less one cost: after every write the emulator serialises the
# metadata of every object it holds (json.dumps with indent, in pure Python), even in memory
# where nothing reads it back. 5,000 puts took over 300 s; without it, a few seconds.
GCS_EMULATOR = """
import sys
from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.storage import Storage
persist = Storage._write_config_to_file
Storage._write_config_to_file = lambda self: None if self._use_memory_fs else persist(self)
main(sys.argv[1:])
"""


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gcp-storage-emulator (GCS's JSON API) over HTTP on a free port, in memory."""
    core_skip("the GCS emulator", "test")
    port = free_port()
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    command = ["start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", GCS_EMULATOR, *command], stdout=out, stderr=subprocess.STDOUT
        )
    wait_for_port(port, process, "gcp-storage-emulator")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def gcs_endpoint(gcs_emulator: str, gcs_credentials: Path) -> Iterator[str]:
    """GCS's XML API, which obstore speaks, in front of the emulator: see
    tests/support/gcs_gateway.py for why and for what the gateway adds."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.support.gcs_gateway import GatewayServer

    private = serialization.load_pem_private_key(
        json.loads(gcs_credentials.read_text())["private_key"].encode(), password=None
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    server = GatewayServer(gcs_emulator, private.public_key(), GCS_CLIENT_EMAIL).start()
    yield server.url
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    return make_s3_bucket(s3_endpoint)


@pytest.fixture
def azure_container(azure_endpoint: str) -> str:
    return make_azure_container(azure_endpoint)


@pytest.fixture
def gcs_bucket(gcs_endpoint: str) -> str:
    return make_gcs_bucket(gcs_endpoint)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    core_skip("PostgreSQL", "postgres")
    from sqlalchemy import create_engine, text

    name = f"shelflife_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A fresh schema of the session database, first on the search path: each test's
    application sees its own tables only, as a real one does (shelflife looks for
    undeclared reference columns among every table of an application database)."""
    from sqlalchemy import create_engine, make_url, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = make_url(pg_database).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pg_catalog_url(pg_url: str) -> Iterator[str]:
    """The session database, emptied of shelflife's tables before each test."""
    from sqlalchemy import create_engine, text

    from shelflife.catalog.schema import metadata

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        names = ", ".join([*metadata.tables, "alembic_version"])
        conn.execute(text(f"DROP TABLE IF EXISTS {names} CASCADE"))
    engine.dispose()
    return pg_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty catalog on SQLite, and one on the PostgreSQL server."""
    from shelflife.catalog import Catalog

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = request.getfixturevalue("pg_catalog_url")
    catalog = Catalog.open(url)
    yield catalog
    catalog.close()


MARIADB_ADMIN = os.environ.get("SHELFLIFE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/")


@pytest.fixture(scope="session")
def mariadb_databases() -> Iterator[list[str]]:
    """The MariaDB databases made in this session, dropped at its end."""
    from sqlalchemy import create_engine, text

    made: list[str] = []
    yield made
    if not made:
        return
    admin = create_engine(MARIADB_ADMIN)
    with admin.begin() as conn:
        for name in made:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def mariadb_url(mariadb_databases: list[str]) -> str:
    """A fresh MariaDB database for this test (see pg_url: each test sees its own tables)."""
    core_skip("MariaDB", "mysql")
    from sqlalchemy import create_engine, text

    name = f"shelflife_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(MARIADB_ADMIN)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:
        pytest.fail(f"MariaDB is not reachable at {MARIADB_ADMIN}: {exc}")
    finally:
        admin.dispose()
    mariadb_databases.append(name)
    return MARIADB_ADMIN.rstrip("/") + "/" + name + "?charset=utf8mb4"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def app_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An application database of each supported kind (tables are named per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("mariadb_url"))


# -- reliability figures ---------------------------------------------------------------------
# Tests that inject faults, race, or feed bad input record what they tried in ``figures``
# (tests/support/figures.py); the session writes them, with the outcome of every test marked
# ``invariant``, to .artifacts/reliability.json, from which scripts/reliability.py writes
# docs/reliability.md.

RELIABILITY_JSON = (
    Path(os.environ.get("SHELFLIFE_ARTIFACTS", ROOT / ".artifacts")) / "reliability.json"
)
_INVARIANT_TESTS: dict[str, dict[str, object]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    doc = (request.function.__doc__ or "").strip().split("\n\n")[0]
    return Figures(request.node.nodeid, " ".join(doc.split()))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    names = getattr(report, "invariants", None)
    if not names:
        return
    entry = _INVARIANT_TESTS.setdefault(
        report.nodeid, {"invariants": names, "outcome": "passed", "doc": report.doc}
    )
    if report.failed:
        entry["outcome"] = "failed"
    elif report.skipped and report.when == "setup":
        entry["outcome"] = "skipped"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if CORE_ONLY and report.failed and call.excinfo is not None:
        from shelflife.errors import MissingExtraError

        if call.excinfo.errisinstance(MissingExtraError):
            # the test asks for an extra this run does not install, and was told so clearly
            report.outcome = "skipped"
            report.longrepr = (
                str(item.path),
                item.location[1] or 0,
                f"core-only run: {call.excinfo.value}",
            )
    names = [n for mark in item.iter_markers("invariant") for n in mark.args]
    if names:
        report.invariants = sorted(set(names))
        function = getattr(item, "function", None)
        doc = (getattr(function, "__doc__", None) or "").strip().split("\n\n")[0]
        report.doc = " ".join(doc.split())


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _FIGURES and not _INVARIANT_TESTS:
        return

    RELIABILITY_JSON.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, object] = {}
    if os.environ.get("SHELFLIFE_RELIABILITY_MERGE") and RELIABILITY_JSON.exists():
        previous = json.loads(RELIABILITY_JSON.read_text())
    figures = {**dict(previous.get("figures", {})), **_FIGURES}  # type: ignore[call-overload]
    tests = {**dict(previous.get("invariant_tests", {})), **_INVARIANT_TESTS}  # type: ignore[call-overload]
    RELIABILITY_JSON.write_text(
        json.dumps(
            {
                "written_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "exit_status": int(session.exitstatus),
                "figures": figures,
                "invariant_tests": tests,
            },
            indent=2,
            sort_keys=True,
        )
    )
