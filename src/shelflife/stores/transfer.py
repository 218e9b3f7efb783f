"""Moving bytes between two stores: streamed, never a whole large object in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shelflife.errors import ObjectNotFound, ShelflifeError
from shelflife.stores._obstore import ObstoreStore
from shelflife.stores.base import PutResult, Stamps


async def transfer(
    src: ObstoreStore,
    src_key: str,
    dst: ObstoreStore,
    dst_key: str | None = None,
    *,
    overwrite: bool = True,
    stamps: Stamps | None = None,
    size: int | None = None,
    whole_up_to: int = 0,
) -> PutResult:
    """Copy one object from ``src`` to ``dst``; return what was written (size, SHA-256).

    Within one store the copy is server-side (and the checksum is read back). Between
    stores an object up to ``whole_up_to`` bytes (and at least up to the destination's
    ``multipart_threshold``) is read whole and sent in one request; a larger one streams
    through multipart, never whole in memory. ``size`` is the object's size if the caller
    has just seen it (else a HEAD asks). The copy carries ``stamps`` (the object's created
    and modified instants, DESIGN I9).
    """
    dst_key = dst_key or src_key
    if src is dst or src.location == dst.location:
        if src_key == dst_key:
            return await checksum(src, src_key)
        await src.copy(src_key, dst_key, overwrite=overwrite)
        return await checksum(dst, dst_key)
    if size is None:
        size = (await src.head(src_key)).size
    whole = max(whole_up_to, dst.multipart_threshold)
    if size <= whole:
        data = await src.get_bytes(src_key)
        return await dst.put(
            dst_key, data, overwrite=overwrite, stamps=stamps, multipart=len(data) > whole
        )
    return await dst.put(dst_key, src.get(src_key), overwrite=overwrite, stamps=stamps)


async def checksum(store: ObstoreStore, key: str) -> PutResult:
    """Read an object through and return its size and SHA-256."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    async for chunk in store.get(key):
        digest.update(chunk)
        size += len(chunk)
    info = await store.head(key)
    return PutResult(key, size, "sha256:" + digest.hexdigest(), info.etag)


async def head_many(
    store: ObstoreStore,
    keys: Sequence[str],
    concurrency: int = 32,
    errors: dict[str, ShelflifeError] | None = None,
) -> dict[str, tuple[int, str | None]]:
    """(size, ETag) of each key that exists, asked ``concurrency`` at a time.

    With ``errors``, a key whose HEAD fails (permission, retries spent) lands there and
    the others are still answered; without it the first failure is raised."""
    semaphore = asyncio.Semaphore(concurrency)
    found: dict[str, tuple[int, str | None]] = {}

    async def one(key: str) -> None:
        async with semaphore:
            try:
                info = await store.head(key)
            except ObjectNotFound:
                return
            except ShelflifeError as exc:
                if errors is None:
                    raise
                errors[key] = exc
                return
            found[key] = (info.size, info.etag)

    await asyncio.gather(*(one(key) for key in keys))
    return found
