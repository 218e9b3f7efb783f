"""Services on single objects: find where a value's object lives, release an object
whose rows are gone, restore one from quarantine."""

from __future__ import annotations

import asyncio

from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key
from shelflife.base.units import utcnow
from shelflife.engine.context import Context
from shelflife.errors import (
    InvalidKeyError,
    ObjectExists,
    ObjectNotFound,
    RefusedError,
    UsageError,
)
from shelflife.model.locations import Location
from shelflife.service import actionlog
from shelflife.stores.transfer import transfer


def resolve(context: Context, ref: str) -> Location:
    """Find where the object a key or reference value names lives today.

    The value is read by the one resolver (:class:`~shelflife.model.locations.Locator`):
    each location it may name is tried on its own tier first, then on the others (a row
    keeps working whichever tier the object sits on today)."""
    candidates, order = _search_order(context, ref)
    found = _first_held(context, order)
    if found is None:
        raise _nowhere(candidates, order)
    return found


def find_key(context: Context, key: str, *, first: str | None = None) -> Location | None:
    """The tier holding the literal key ``key`` (inventory first, then the stores), in
    config order with ``first`` ahead; None if no tier holds it or it cannot be a key.

    No reference spelling is read: ``outputs/x.mp4`` is that key even where a tier's
    ``ref_format`` is ``outputs/{key}``."""
    return _first_held(context, _key_places(context, key, first))


def resolve_name(context: Context, name: str, *, first: str | None = None) -> Location:
    """Where the object a storage name lives: the literal key on any tier (see
    :func:`find_key`), else what :func:`resolve` finds for it as a reference value (a
    row a migration rewrote). For interfaces whose names are keys first (Django's
    storage, fsspec paths).

    Each place is asked once: the places of the literal key, found empty, are not asked
    again as places of the value (a name no spelling matches names only those), so a
    name nothing holds costs one inventory lookup and one store request per tier."""
    literal = _key_places(context, name, first)
    found = _first_held(context, literal)
    if found is not None:
        return found
    candidates, order = _search_order(context, name)
    found = _first_held(context, [place for place in order if place not in literal])
    if found is None:
        raise _nowhere(candidates, order)
    return found


def _key_places(context: Context, key: str, first: str | None) -> list[Location]:
    """The literal key on each tier, in config order with ``first`` ahead; [] when
    ``key`` cannot be a key."""
    try:
        key = validate_key(key)
    except InvalidKeyError:
        return []
    tiers = list(context.config.tiers)
    if first in tiers:
        tiers.remove(first)
        tiers.insert(0, first)
    return [Location(tier, key) for tier in tiers]


def _first_held(context: Context, places: list[Location]) -> Location | None:
    """The first of ``places`` the inventory holds, else the first a store holds."""
    found = _in_catalog(context, places)
    if found is not None:
        return found
    for place in places:
        if run_sync(context.store(place.tier).exists(place.key)):
            return place
    return None


async def resolve_async(context: Context, ref: str) -> Location:
    """:func:`resolve` from a running event loop: the catalog is read in a worker thread,
    the stores are asked on the caller's loop."""
    candidates, order = _search_order(context, ref)
    found = await asyncio.to_thread(_in_catalog, context, order)
    if found is not None:
        return found
    for candidate in order:
        if await context.store(candidate.tier).exists(candidate.key):
            return candidate
    raise _nowhere(candidates, order)


def _search_order(context: Context, ref: str) -> tuple[list[Location], list[Location]]:
    """The locations ``ref`` names, and every place to look for them, in order."""
    tiers = list(context.config.tiers)
    candidates = context.locator.resolve(ref)
    if not candidates:
        candidates = [Location(context.config.default_tier, validate_key(ref.strip()))]
    order: list[Location] = list(candidates)
    for candidate in candidates:
        order += [
            Location(tier, candidate.key)
            for tier in tiers
            if Location(tier, candidate.key) not in order
        ]
    return candidates, order


def _in_catalog(context: Context, order: list[Location]) -> Location | None:
    for candidate in order:
        if context.catalog.get(candidate.tier, candidate.key) is not None:
            return candidate
    return None


def _nowhere(candidates: list[Location], order: list[Location]) -> ObjectNotFound:
    names = list(dict.fromkeys(loc.tier for loc in order))
    return ObjectNotFound(
        f"no object {candidates[0].key!r} on any tier ({', '.join(names)})",
        hint="run 'shelflife scan' if it was written outside shelflife, or 'shelflife ls'",
    )


def release_object(context: Context, ref: str) -> bool:
    """Delete the object ``ref`` names now, unless a reference, pin or lease holds it."""
    sources = context.sources()
    if not sources:
        raise RefusedError(
            "no reference source is declared, so shelflife cannot tell that nothing points here",
            hint="declare the columns that point at objects under [[references]]",
        )
    location = resolve(context, ref)
    # Kept while any row names the key on any tier, by any spelling: a row rewritten by a
    # migration in flight names the new tier while the old copy is still being removed.
    for source in sources:
        if source.naming([location.key]):
            return False
    if context.ledger.protected_keys(location.tier, [location.key], utcnow()):
        return False
    run_sync(context.store(location.tier).delete(location.key))
    context.catalog.forget(location.tier, [location.key])
    actionlog.record(
        context,
        [
            actionlog.entry(
                "release",
                "release",
                location.tier,
                location.key,
                reason="released: its rows were deleted and nothing else holds it",
            )
        ],
    )
    return True


async def restore_from_quarantine(context: Context, key: str, tier: str | None) -> Location:
    entry = await asyncio.to_thread(context.ledger.find_quarantined, key, tier)
    if entry is None:
        raise UsageError(
            f"{key!r} is not in quarantine" + (f" on tier {tier}" if tier else ""),
            hint="quarantined objects are kept for the rule's quarantine_days, then purged",
        )
    store = context.store(entry.tier)
    try:
        result = await transfer(store, entry.trash_key, store, entry.key, overwrite=False)
    except ObjectExists:
        raise UsageError(
            f"an object already exists at {entry.key} on {entry.tier}; not overwriting it",
            hint="move or delete that object first, then restore",
        ) from None
    await store.delete(entry.trash_key)
    now = utcnow()
    await asyncio.to_thread(context.catalog.forget, entry.tier, [entry.trash_key])
    await asyncio.to_thread(
        context.catalog.record_put,
        entry.tier,
        entry.key,
        size=result.size,
        checksum=result.checksum,
        etag=result.etag,
        now=now,
    )
    await asyncio.to_thread(context.ledger.set_quarantine_state, entry.id, "restored")
    restored = actionlog.entry(
        "restore",
        "restore",
        entry.tier,
        entry.key,
        size=result.size,
        reason="restored from quarantine on request",
        detail=f"from {entry.trash_key}",
    )
    await asyncio.to_thread(actionlog.record, context, [restored])
    return Location(entry.tier, entry.key)
