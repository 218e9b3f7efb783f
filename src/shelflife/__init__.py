"""shelflife: keep file storage healthy without changing the application.

from shelflife import Shelf
shelf = Shelf.open("shelflife.toml")
ref = shelf.put("render.mp4", key="outputs/render.mp4")
shelf.url(ref)
"""

from shelflife.errors import ShelflifeError
from shelflife.service.shelf import Shelf
from shelflife.service.uploads import StoredObject

__all__ = ["Shelf", "ShelflifeError", "StoredObject"]
__version__ = "0.1.0"
