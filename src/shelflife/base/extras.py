"""Optional dependencies: which extra installs which module, and the error when one is missing.

The core install (``pip install shelflife``) covers ``file://`` tiers, a SQLite catalog and
the CLI. Everything else comes with an extra named by what it enables: ``s3``, ``azure``,
``gcs`` (obstore already speaks GCS: an empty alias), ``postgres``, ``mysql``, ``server``
(HTTP API, dashboard, metrics), ``celery``, ``django``, ``fsspec``, or ``all``. Code that
needs one imports it under :func:`needs`, so a missing package is a
:class:`~shelflife.errors.MissingExtraError` naming the ``pip install`` to run, never a
bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from types import ModuleType

from shelflife.errors import MissingExtraError

EXTRA_OF: dict[str, str] = {
    "boto3": "s3",
    "botocore": "s3",
    "s3transfer": "s3",
    "azure": "azure",
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "psycopg2": "postgres",  # a URL naming another driver: see OTHER_DRIVERS
    "asyncpg": "postgres",
    "pymysql": "mysql",
    "MySQLdb": "mysql",
    "fastapi": "server",
    "fastapi_offline": "server",
    "starlette": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "multipart": "server",
    "python_multipart": "server",
    "celery": "celery",
    "kombu": "celery",
    "redis": "celery",
    "django": "django",
    "fsspec": "fsspec",
}
"""Top-level module → the extra that installs it."""


OTHER_DRIVERS: dict[str, str] = {
    "psycopg2": "postgresql+psycopg://",
    "asyncpg": "postgresql+psycopg://",
    "MySQLdb": "mysql+pymysql://",
}
"""Database drivers no extra installs → the URL form of the driver the extra does install."""


def missing_extra(feature: str, exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The error to raise for ``exc``, or None when the module is no extra's (a real bug)."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None:
        return None
    error = MissingExtraError(feature, module, extra)
    if module in OTHER_DRIVERS:
        error.hint = (
            f"the URL asks for the {module} driver; write it as {OTHER_DRIVERS[module]}… "
            f"(psycopg 3 / PyMySQL), installed by pip install 'shelflife[{extra}]'"
        )
    return error


@contextmanager
def needs(feature: str) -> Iterator[None]:
    """Imports in this block that fail for a missing extra raise MissingExtraError."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra(feature, exc)
        if error is None:
            raise
        raise error from None


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise MissingExtraError naming its extra."""
    with needs(feature):
        return import_module(module)
