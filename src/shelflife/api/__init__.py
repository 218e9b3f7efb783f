"""The HTTP interface (FastAPI): the object API, runs, the dashboard, metrics and health.

Needs the ``server`` extra. ``create_app`` is imported on first use, so that modules of this
package that need no web framework (token hashing, used by ``shelflife token``) import
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shelflife.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name != "create_app":
        raise AttributeError(f"module 'shelflife.api' has no attribute {name!r}")
    from shelflife.api.app import create_app

    return create_app
