"""Dependencies of the HTTP API's routes: the shelf, and bearer tokens with scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from shelflife.api.auth import Principal, Tokens
from shelflife.api.errors import ApiError
from shelflife.service.shelf import Shelf


def current_shelf(request: Request) -> Shelf:
    shelf: Shelf = request.app.state.shelf
    return shelf


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the request's bearer token, holding ``scope`` (401 / 403 otherwise).

    A token checked in the last ``[api] token_cache_ttl`` is answered from memory on the
    event loop; any other is looked up in the catalog in a worker thread."""

    async def check(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "a bearer token is needed",
                hint="send 'Authorization: Bearer TOKEN'; create one with "
                "'shelflife token create NAME --scopes read'",
            )
        tokens: Tokens = request.app.state.tokens
        token = token.strip()
        principal = tokens.remembered(token)
        if principal is None:
            principal = await run_in_threadpool(tokens.authenticate, token)
        if principal is None:
            raise ApiError(401, "unauthorized", "the token is not valid")
        if not principal.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"token {principal.name!r} lacks the {scope!r} scope",
                hint=f"it has: {', '.join(sorted(principal.scopes))}",
            )
        return principal

    return check


Read = Annotated[Principal, Depends(require("read"))]
Write = Annotated[Principal, Depends(require("write"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def read_unless(public: bool) -> Callable[[Request], Awaitable[None]]:
    """A dependency: nothing if the page is public, else a token with ``read``."""
    check = require("read")

    async def guard(request: Request) -> None:
        if not public:
            await check(request)

    return guard


ShelfDep = Annotated[Shelf, Depends(current_shelf)]
