"""shelflife: keep file storage healthy without changing the application.

from shelflife import Shelf
shelf = Shelf.open("shelflife.toml")
ref = shelf.put("render.mp4", key="outputs/render.mp4")
shelf.url(ref)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shelflife.errors import ShelflifeError

if TYPE_CHECKING:
    from shelflife.service.aio import AsyncShelf
    from shelflife.service.shelf import Shelf
    from shelflife.service.uploads import StoredObject

__all__ = ["AsyncShelf", "Shelf", "ShelflifeError", "StoredObject"]
__version__ = "0.1.0"

# ``import shelflife`` runs before every command (the CLI is ``shelflife.cli``); the
# facade pulls in the catalog (SQLAlchemy), the config models and the stores, so it is
# imported on first use instead (PEP 562) and ``shelflife --help`` stays fast.
_LAZY = {
    "AsyncShelf": "shelflife.service.aio",
    "Shelf": "shelflife.service.shelf",
    "StoredObject": "shelflife.service.uploads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shelflife' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
