"""Objects on a shelf's stores: written aged, leases lifted, read back."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from shelflife import Shelf
from shelflife.base.units import utcnow

REF = "data/storage/outputs/{}"


def age(shelf: Shelf, tier: str, key: str, days: float) -> None:
    """Make an object ``days`` old, in the store and in the inventory."""
    path = shelf.store(tier).path(key)  # type: ignore[attr-defined]
    stamp = (utcnow() - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))
    from sqlalchemy import update

    from shelflife.base.aio import run_sync
    from shelflife.catalog.schema import objects

    etag = run_sync(shelf.store(tier).head(key)).etag  # a local ETag includes the mtime
    with shelf.catalog.engine.begin() as conn:
        conn.execute(
            update(objects)
            .where(objects.c.tier == tier, objects.c.key == key)
            .values(
                modified_at=utcnow() - timedelta(days=days),
                created_at=utcnow() - timedelta(days=days),
                arrived_at=utcnow() - timedelta(days=days),
                etag=etag,
            )
        )


def no_leases(shelf: Shelf) -> None:
    shelf.ledger.purge_expired_leases(utcnow() + timedelta(days=365))


def stored(shelf: Shelf, *names: str, days: float = 0) -> None:
    """Objects written through the shelf (``days`` old), leases lifted."""
    for name in names:
        shelf.put(name.encode() * 10, name)
        if days:
            age(shelf, "local", name, days)
    no_leases(shelf)


def read(shelf: Shelf, tier: str, key: str) -> bytes:
    store = shelf.store(tier)

    async def go() -> bytes:
        return b"".join([chunk async for chunk in store.get(key)])

    return asyncio.run(go())
