"""Routes for objects: upload, download, delete, URLs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from shelflife.api.deps import Read, Write, require
from shelflife.api.errors import ApiError
from shelflife.api.uploads import UPLOAD_OPENAPI, UploadBody, overwrite_flag
from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key
from shelflife.base.units import utcnow
from shelflife.errors import ObjectNotFound, StoreError
from shelflife.service.shelf import Shelf
from shelflife.stores.local import LocalStore


def routes(shelf: Shelf) -> APIRouter:
    router = APIRouter()

    check_write = require("write")

    @router.post(
        "/api/v1/objects",
        status_code=201,
        summary="Upload an object",
        description="Stores the `file` part under `key` (default: the file name) on `tier` "
        "(default: local), streamed to the tier as it arrives; send `key` and `tier` before "
        "`file`. Answered once the object is durable on its tier and in the catalog.",
        response_class=JSONResponse,
        openapi_extra=UPLOAD_OPENAPI,
    )
    async def upload(request: Request) -> JSONResponse:
        # The token and ?overwrite are read here rather than declared as FastAPI parameters,
        # and the answer is built directly: on a small upload, FastAPI's parameter machinery
        # and response encoding cost as much as the write. UPLOAD_OPENAPI describes both.
        await check_write(request)
        overwrite = overwrite_flag(request.scope.get("query_string", b""))
        body = UploadBody(request)
        await body.read_head()
        name = body.fields.get("key") or body.filename
        if not name:
            raise ApiError(400, "bad_request", "give a key, or a file name to use as the key")
        validate_key(name)
        tier = body.fields.get("tier") or None
        if tier is not None and tier not in shelf.config.tiers:
            raise ApiError(
                400,
                "bad_request",
                f"unknown tier {tier!r}",
                f"known: {', '.join(shelf.config.tiers)}",
            )
        source = body.whole if body.whole is not None else body.stream()
        try:
            stored = await shelf.put_async(source, name, tier=tier, overwrite=overwrite)
        except Exception:
            if body.failure is not None:
                raise body.failure from None  # the body's fault, whatever the store made of it
            raise
        return JSONResponse(
            {
                "key": stored.key,
                "tier": stored.tier,
                "size": stored.size,
                "checksum": stored.checksum,
                "ref": stored.ref,
                "url": await _url(stored.tier, stored.key),
            },
            status_code=201,
        )

    async def _url(tier: str, key: str) -> str | None:
        try:
            return await shelf.store(tier).url(key)
        except StoreError:
            return None

    @router.get(
        "/api/v1/objects/{key:path}",
        summary="Download an object",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, 307: {}},
    )
    def download(key: str, _: Read) -> Response:
        location = shelf.resolve(key)
        store = shelf.store(location.tier)
        shelf.record_access(location)
        if isinstance(store, LocalStore):
            path = store.path(location.key)
            if not path.is_file():
                raise ObjectNotFound(f"no object {location.key!r} on {location.tier}")
            return FileResponse(path, media_type="application/octet-stream")
        return RedirectResponse(run_sync(store.url(location.key)), status_code=307)

    @router.delete("/api/v1/objects/{key:path}", summary="Delete an object")
    def remove(
        key: str,
        principal: Write,
        force: Annotated[
            bool, Query(description="delete even if rows point at it (admin)")
        ] = False,
    ) -> dict[str, Any]:
        if force and not principal.allows("admin"):
            raise ApiError(403, "forbidden", "force=true needs the 'admin' scope")
        if not force:
            holders = shelf.references_to(key)
            if holders:
                raise ApiError(
                    409,
                    "referenced",
                    f"rows in {', '.join(holders)} point at this object; not deleting it",
                    hint="delete or change those rows first, or use force=true (admin)",
                )
        location = shelf.delete(key)
        return {"key": location.key, "tier": location.tier, "deleted": True}

    @router.get("/api/v1/urls/{key:path}", summary="A URL for an object")
    def object_url(key: str, _: Read) -> dict[str, Any]:
        location = shelf.resolve(key)
        url = shelf.url(key)
        tier = shelf.config.tiers[location.tier]
        expires = None
        if tier.scheme not in ("file", "memory") and not tier.public_url:
            expires = (utcnow() + tier.presign_ttl).isoformat()
        return {"url": url, "expires_at": expires, "key": location.key, "tier": location.tier}

    return router
