"""The HTTP interface (FastAPI): metrics and health now; the object API builds on it."""

from shelflife.api.app import create_app

__all__ = ["create_app"]
