"""``file://`` tiers: a folder on a local or mounted filesystem."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

from obstore.store import LocalStore as _ObLocalStore

from shelflife.config.model import TierConfig
from shelflife.errors import InvalidKeyError, StoreConfigError
from shelflife.keys import validate_key
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import PutResult, PutSource

NAME_MAX = 255  # bytes in one file name on Linux filesystems


class LocalStore(ObstoreStore):
    """Objects as files under ``root``; writes go to a temporary file, then rename."""

    def __init__(self, root: Path, *, public_url: str | None = None) -> None:
        if not root.is_absolute():
            raise StoreConfigError(f"local store root {root} must be an absolute path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(
                f"cannot create the folder {root}: {exc.strerror}",
                hint="create it yourself, or give the user running shelflife write access",
            ) from None
        self.root = root
        self.public_url = public_url
        super().__init__(
            _ObLocalStore(prefix=root, automatic_cleanup=True), "file://" + str(root)
        )

    @classmethod
    def from_tier(cls, tier: TierConfig) -> LocalStore:
        return cls(Path(tier.url.removeprefix("file://")), public_url=tier.public_url)

    async def put(self, key: str, source: PutSource, *, overwrite: bool = True) -> PutResult:
        validate_key(key)
        longest = max(len(segment.encode()) for segment in key.split("/"))
        if longest > NAME_MAX:
            raise InvalidKeyError(
                f"a segment of key {key[:60]!r}… is {longest} bytes; a local filesystem "
                f"allows at most {NAME_MAX} bytes per file or folder name",
                hint="split long names with '/' or store such keys on an object-store tier",
            )
        return await super().put(key, source, overwrite=overwrite)

    def path(self, key: str) -> Path:
        """The file that holds ``key`` (it may not exist)."""
        return self.root / validate_key(key)

    def disk_size(self) -> int:
        """Total size in bytes of the filesystem holding this tier."""
        return shutil.disk_usage(self.root).total

    def disk_used(self) -> int:
        """Bytes in use on the filesystem holding this tier (by anything)."""
        usage = shutil.disk_usage(self.root)
        return usage.total - usage.free

    async def url(self, key: str) -> str:
        validate_key(key)
        if self.public_url:
            return self.public_url.replace("{key}", quote(key, safe="/"))
        return self.path(key).as_uri()
