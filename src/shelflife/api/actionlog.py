"""``GET /api/v1/log``: the action log, filtered and paged by a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from shelflife.api.deps import Read
from shelflife.api.errors import ApiError
from shelflife.base.units import parse_instant_or_ago, utcnow
from shelflife.service import actionlog
from shelflife.service.shelf import Shelf

MAX_ID = 2**63 - 1  # what the id column holds


def routes(shelf: Shelf) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/log", summary="The action log: what happened to objects, and why")
    def action_log(
        _: Read,
        key: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=4096,
                description="a key, or a value a reference column holds",
            ),
        ] = None,
        rule: Annotated[
            str | None, Query(min_length=1, max_length=128, description="only this rule id")
        ] = None,
        run: Annotated[
            str | None, Query(min_length=1, max_length=64, description="only this run id")
        ] = None,
        tier: Annotated[
            str | None,
            Query(min_length=1, max_length=64, description="acted on this tier, or moved to it"),
        ] = None,
        outcome: Annotated[
            str | None, Query(pattern="^(done|skipped|failed)$", description="only this outcome")
        ] = None,
        since: Annotated[
            str | None,
            Query(max_length=64, description="recorded since: a duration ago (7d) or ISO 8601"),
        ] = None,
        until: Annotated[
            str | None,
            Query(max_length=64, description="recorded before: a duration ago or ISO 8601"),
        ] = None,
        after: Annotated[
            int, Query(ge=0, le=MAX_ID, description="the cursor: entries with ids above it")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Entries oldest first. ``next`` is always the cursor to continue from (the last
        entry's id, or ``after`` when there is none): pass it as ``after`` for the
        following page, or to poll for entries logged since. ``more`` says whether
        another page is there already."""
        texts = {"key": key, "rule": rule, "run": run, "tier": tier}
        for name, value in texts.items():
            if value is not None and "\x00" in value:
                raise ApiError(422, "invalid_request", f"{name}: must not contain NUL")
        if tier is not None and tier not in shelf.config.tiers:
            raise ApiError(422, "invalid_request", f"tier: unknown tier {tier!r}")
        now = utcnow()
        instants = {}
        for name, value in (("since", since), ("until", until)):
            try:
                instants[name] = None if value is None else parse_instant_or_ago(value, now)
            except ValueError as exc:
                raise ApiError(422, "invalid_request", f"{name}: {exc}") from None
        keys: tuple[str, ...] = ()
        if key is not None:
            keys = tuple(actionlog.keys_named(shelf.context, key))
            if not keys:
                return {"entries": [], "next": after, "more": False}
        chosen = actionlog.LogFilter(
            keys=keys,
            rule=rule,
            run_id=run,
            tier=tier,
            outcome=outcome,
            since=instants["since"],
            until=instants["until"],
        )
        found = actionlog.find(shelf.context, chosen, after=after, limit=limit + 1)
        more = len(found) > limit
        entries = found[:limit]
        return {
            "entries": [item.as_json() for item in entries],
            "next": entries[-1].id if entries else after,
            "more": more,
        }

    return router
