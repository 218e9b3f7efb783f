"""Routes for objects: upload, download, delete, URLs, all on the event loop through
:class:`~shelflife.service.aio.AsyncShelf`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from shelflife.api.deps import Read, Write, require
from shelflife.api.errors import ApiError
from shelflife.api.uploads import UPLOAD_OPENAPI, UploadBody, overwrite_flag
from shelflife.base.keys import validate_key
from shelflife.base.units import utcnow
from shelflife.errors import StoreError
from shelflife.service.aio import AsyncShelf
from shelflife.service.shelf import Shelf
from shelflife.stores.base import ObjectInfo, ObjectStream
from shelflife.stores.local import LocalStore, LocalStream

STREAM_CHUNK = 256 * 1024  # bytes sent at a time when streaming a download


def routes(shelf: Shelf) -> APIRouter:
    router = APIRouter()
    # Every object route runs on the event loop through the async facade: stores awaited
    # there, the catalog read in worker threads, uploads' rows committed in groups.
    aio = AsyncShelf(shelf)

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
            stored = await aio.put(source, name, tier=tier, overwrite=overwrite)
        except Exception:
            if body.failure is not None:
                raise body.failure from None  # the body's fault, whatever the store made of it
            raise
        return JSONResponse(
            {
                "key": stored.key,
                "tier": stored.tier,
                "bytes": stored.size,
                "size": stored.size,  # the API's original name for it, kept for its clients
                "checksum": stored.checksum,
                "ref": stored.ref,
                "url": await _url(stored.tier, stored.key),
            },
            status_code=201,
        )

    async def _url(tier: str, key: str) -> str | None:
        try:
            return await aio.store(tier).url(key)
        except StoreError:
            return None

    @router.get(
        "/api/v1/objects/{key:path}",
        summary="Download an object",
        description="Streams an object of a local tier (a `Range: bytes=…` header asks for "
        "part of it: 206); an object on an object store is answered with 307 to a presigned "
        "URL, which serves ranges itself.",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 307: {}, 416: {}},
    )
    async def download(key: str, request: Request, _: Read) -> Response:
        location = await aio.resolve(key)
        if not isinstance(aio.store(location.tier), LocalStore):
            return RedirectResponse(await aio.url(location), status_code=307)
        stream = await aio.open(location, chunk_size=STREAM_CHUNK)
        # The range is worked out from the file opened, never from an earlier look at it:
        # an overwrite in between cannot make the answer describe one version and send
        # another.
        wanted = request.headers.get("range")
        if wanted is None or not isinstance(stream, LocalStream):
            return _streamed(stream, 200)
        validator = request.headers.get("if-range")
        if validator is not None and not if_range_matches(validator, stream.info):
            return _streamed(stream, 200)  # changed since the client's copy: all of it
        size = stream.info.size
        span = byte_range(wanted, size)
        if span is None:  # not a single byte range: the whole object, as RFC 9110 allows
            return _streamed(stream, 200)
        if span == UNSATISFIABLE:
            await stream.aclose()
            return Response(
                status_code=416,
                headers={"content-range": f"bytes */{size}", "accept-ranges": "bytes"},
            )
        start, end = span
        stream.select(start, end - start)
        return _streamed(stream, 206)

    @router.delete("/api/v1/objects/{key:path}", summary="Delete an object")
    async def remove(
        key: str,
        principal: Write,
        force: Annotated[
            bool, Query(description="delete even if rows point at it (admin)")
        ] = False,
    ) -> dict[str, Any]:
        if force and not principal.allows("admin"):
            raise ApiError(403, "forbidden", "force=true needs the 'admin' scope")
        copies = await aio.copies(key)
        location = copies[0]
        if not force:
            # The application's databases are read synchronously: in a worker thread.
            holders = await asyncio.to_thread(shelf.holders, copies)
            if holders:
                raise ApiError(
                    409,
                    "referenced",
                    f"rows in {', '.join(holders)} point at this object; not deleting it",
                    hint="delete or change those rows first, or use force=true (admin)",
                )
        await aio.delete_copies(
            copies, forced=force, command="http-delete", by=f"token {principal.name}"
        )
        return {
            "key": location.key,
            "tier": location.tier,
            "tiers": [copy.tier for copy in copies],
            "deleted": True,
        }

    @router.get("/api/v1/urls/{key:path}", summary="A URL for an object")
    async def object_url(key: str, _: Read) -> dict[str, Any]:
        location = await aio.resolve(key)
        url = await aio.url(location)
        tier = shelf.config.tiers[location.tier]
        expires = None
        if tier.scheme not in ("file", "memory") and not tier.public_url:
            expires = (utcnow() + tier.presign_ttl).isoformat()
        return {"url": url, "expires_at": expires, "key": location.key, "tier": location.tier}

    return router


UNSATISFIABLE = (-1, -1)
# At most 19 digits a position (up to 10**19 - 1 bytes, past any object): a longer number
# makes the header no single byte range, and the whole object is sent.
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` header asks of an object of ``size`` bytes, as
    (start, end exclusive); None if the header is not a single byte range (the whole
    object is then sent); :data:`UNSATISFIABLE` if no byte of it exists."""
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)  # the last N bytes
        return UNSATISFIABLE if suffix == 0 or size == 0 else (max(size - suffix, 0), size)
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None  # an invalid range is ignored
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size)


def if_range_matches(validator: str, info: ObjectInfo) -> bool:
    """Whether an ``If-Range`` validator names the object as it is (RFC 9110 §13.1.5): an
    entity tag compared strongly with its ETag (a weak one never matches), or an HTTP date
    equal to its ``Last-Modified``. A range is sent only when it matches."""
    validator = validator.strip()
    if validator.startswith('"'):
        return bool(info.etag) and validator == f'"{info.etag}"'
    if validator.startswith("W/"):
        return False
    try:
        when = parsedate_to_datetime(validator)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        return False
    return when == info.modified.replace(microsecond=0)


def _streamed(stream: ObjectStream, status: int) -> StreamingResponse:
    info = stream.info
    headers = {
        "content-length": str(stream.length),
        "accept-ranges": "bytes",
        "last-modified": format_datetime(info.modified, usegmt=True),
    }
    if info.etag:
        headers["etag"] = f'"{info.etag}"'
    if status == 206:
        end = stream.offset + stream.length - 1
        headers["content-range"] = f"bytes {stream.offset}-{end}/{info.size}"
    return StreamingResponse(
        _body(stream), status_code=status, media_type="application/octet-stream", headers=headers
    )


async def _body(stream: ObjectStream) -> AsyncIterator[bytes]:
    async with stream:
        async for chunk in stream:
            yield chunk
