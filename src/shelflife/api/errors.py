"""The HTTP API's errors: JSON ``{"code", "message", "hint"}`` with a stable ``code``,
and the upload size limit enforced as the body arrives."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelflife.base.logs import redact
from shelflife.errors import (
    CatalogError,
    ConfigError,
    InvalidKeyError,
    LockedError,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    RefusedError,
    ShelflifeError,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
    UsageError,
)

UPLOAD_PATH = "/api/v1/objects"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file's bytes


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


class TooLarge(Exception):
    pass


# (exception class, HTTP status, code), most specific first
_ERRORS: list[tuple[type[ShelflifeError], int, str]] = [
    (InvalidKeyError, 400, "invalid_key"),
    (ObjectNotFound, 404, "not_found"),
    (ObjectExists, 409, "exists"),
    (ObjectArchived, 409, "archived"),
    (LockedError, 409, "run_in_progress"),
    (RefusedError, 409, "refused"),
    (UsageError, 400, "bad_request"),
    (StoreAuthError, 502, "store_auth"),
    (StoreUnreachable, 503, "store_unreachable"),
    (StoreError, 502, "store_error"),
    (CatalogError, 503, "catalog_unavailable"),
    (ConfigError, 500, "config_error"),
]


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": redact(message)}
    if hint:
        body["hint"] = redact(hint)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


class UploadLimit:
    """ASGI middleware: refuse an upload body past the limit, as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != UPLOAD_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await too_large(self.limit - MULTIPART_SLACK)(scope, receive, send)
            return
        seen = 0
        exceeded = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise TooLarge
            return message

        replaced = False

        async def reply(message: Message) -> None:
            # the body parser turns our TooLarge into its own 400: answer 413 instead
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif not replaced:
                replaced = True
                response = too_large(self.limit - MULTIPART_SLACK)
                await response(scope, receive, send)

        await self.app(scope, counted, reply)


def too_large(limit: int) -> JSONResponse:
    return error_response(
        413,
        "too_large",
        f"the upload is larger than the server's limit of {limit} bytes",
        hint="raise [api] max_upload_size, or store the file with 'shelflife put'",
    )


def install_handlers(app: FastAPI, max_upload_size: int) -> None:
    """Every error as JSON with a stable code."""

    @app.exception_handler(ApiError)
    def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.hint)

    @app.exception_handler(ShelflifeError)
    def _shelflife_error(_: Request, exc: ShelflifeError) -> JSONResponse:
        for kind, status, code in _ERRORS:
            if isinstance(exc, kind):
                return error_response(status, code, exc.message, exc.hint)
        return error_response(500, "error", exc.message, exc.hint)

    @app.exception_handler(TooLarge)
    def _upload_too_large(_: Request, __: TooLarge) -> JSONResponse:
        return too_large(max_upload_size)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
