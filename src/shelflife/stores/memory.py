"""``memory://NAME`` tiers: in-process stores for tests and trials.

Stores are shared by name within a process, so opening the same URL twice reaches the
same objects, as it would for any other backend.
"""

from __future__ import annotations

import threading
from urllib.parse import quote

from obstore.store import MemoryStore as _ObMemoryStore

from shelflife.base.keys import validate_key
from shelflife.config.model import TierConfig
from shelflife.stores._obstore import ObstoreStore

_NAMED: dict[str, _ObMemoryStore] = {}
_LOCK = threading.Lock()


class MemoryStore(ObstoreStore):
    """Objects held in this process's memory; gone when it exits."""

    def __init__(self, name: str = "default") -> None:
        with _LOCK:
            store = _NAMED.setdefault(name, _ObMemoryStore())
        self.name = name
        super().__init__(store, f"memory://{name}")

    @classmethod
    def from_tier(cls, tier: TierConfig) -> MemoryStore:
        return cls(tier.url.removeprefix("memory://").strip("/") or "default")

    async def url(self, key: str) -> str:
        return f"{self.location}/{quote(validate_key(key), safe='/')}"

    @staticmethod
    def forget(name: str) -> None:
        """Drop a named store and its objects (tests)."""
        with _LOCK:
            _NAMED.pop(name, None)
