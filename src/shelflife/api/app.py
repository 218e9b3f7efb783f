"""``shelflife serve``: the HTTP API (DESIGN 5.4), /metrics, health and the dashboard.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, so store and
catalog calls never block the event loop. Errors are JSON ``{"code", "message", "hint"}``
with a stable ``code``. Uploads are parsed by Starlette, which spools a file part to disk
past 1 MiB (never the whole file in memory); the request body is counted as it arrives
and refused with 413 past ``[api] max_upload_size``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelflife import __version__
from shelflife.api.access import AccessBatcher
from shelflife.api.auth import Principal, Tokens
from shelflife.api.dashboard import render_dashboard
from shelflife.base.aio import run_sync
from shelflife.base.keys import validate_key
from shelflife.base.logs import redact
from shelflife.base.units import utcnow
from shelflife.catalog.history import History
from shelflife.errors import (
    CatalogError,
    ConfigError,
    InvalidKeyError,
    LockedError,
    ObjectExists,
    ObjectNotFound,
    RefusedError,
    ShelflifeError,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
    UsageError,
)
from shelflife.service import metrics
from shelflife.service import runs as lifecycle
from shelflife.service.shelf import Shelf
from shelflife.stores.local import LocalStore
from shelflife.workers.scheduler import schedule_status

LOG = logging.getLogger("shelflife.api")
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
    (LockedError, 409, "run_in_progress"),
    (RefusedError, 409, "refused"),
    (UsageError, 400, "bad_request"),
    (StoreAuthError, 502, "store_auth"),
    (StoreUnreachable, 503, "store_unreachable"),
    (StoreError, 502, "store_error"),
    (CatalogError, 503, "catalog_unavailable"),
    (ConfigError, 500, "config_error"),
]


def _error(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
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
            await _too_large(self.limit - MULTIPART_SLACK)(scope, receive, send)
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
                response = _too_large(self.limit - MULTIPART_SLACK)
                await response(scope, receive, send)

        await self.app(scope, counted, reply)


def _too_large(limit: int) -> JSONResponse:
    return _error(
        413,
        "too_large",
        f"the upload is larger than the server's limit of {limit} bytes",
        hint="raise [api] max_upload_size, or store the file with 'shelflife put'",
    )


def require(scope: str) -> Callable[[Request], Principal]:
    """A dependency: the request's bearer token, holding ``scope`` (401 / 403 otherwise)."""

    def check(request: Request) -> Principal:
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
        principal = tokens.authenticate(token.strip())
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


class RunRequest(BaseModel):
    rule: str | None = Field(default=None, description="only this rule id")
    yes: bool = Field(default=False, description="allow deletions above the caps")


class BackgroundRuns:
    """One run at a time from this server, started in a thread."""

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, request: RunRequest) -> str:
        with self._lock:
            busy = self._thread is not None and self._thread.is_alive()
            if busy or History(self.shelf.catalog.engine).running():
                raise ApiError(
                    409,
                    "run_in_progress",
                    "a run is in progress; one runs at a time",
                    hint="GET /api/v1/runs shows it",
                )
            if request.rule is not None:
                lifecycle.choose_rules(self.shelf, request.rule)  # an unknown rule: 400 now
            run_id = lifecycle.new_id("run", utcnow())
            self._thread = threading.Thread(
                target=self._run, args=(run_id, request), name=run_id, daemon=True
            )
            self._thread.start()
        return run_id

    def _run(self, run_id: str, request: RunRequest) -> None:
        try:
            self.shelf.run(rule=request.rule, yes=request.yes, trigger="api", run_id=run_id)
        except LockedError as exc:  # another process's run: on record, so GET finds it
            history = History(self.shelf.catalog.engine)
            history.start(run_id, command="run", trigger="api", now=utcnow())
            history.finish(run_id, status="failed", now=utcnow(), error=exc.message)
        except Exception:
            LOG.exception("run %s failed", run_id)  # the run history has its status

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def create_app(shelf: Shelf) -> FastAPI:
    config = shelf.config.api
    tokens = Tokens(shelf.config, shelf.catalog.engine)
    runs = BackgroundRuns(shelf)
    access = AccessBatcher(lambda tier, keys, now: shelf.catalog.touch(tier, keys, now))
    shelf.access = access.touch

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        access.close()  # the last access times reach the catalog

    app = FastAPI(
        title="shelflife",
        version=__version__,
        description="Storage lifecycle manager: objects, URLs, stats, plans, runs, metrics.",
        lifespan=lifespan,
    )
    app.state.shelf, app.state.runs, app.state.access = shelf, runs, access
    app.state.tokens = tokens
    app.add_middleware(UploadLimit, limit=config.max_upload_size)

    # -- errors ------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.hint)

    @app.exception_handler(ShelflifeError)
    def _shelflife_error(_: Request, exc: ShelflifeError) -> JSONResponse:
        for kind, status, code in _ERRORS:
            if isinstance(exc, kind):
                return _error(status, code, exc.message, exc.hint)
        return _error(500, "error", exc.message, exc.hint)

    @app.exception_handler(TooLarge)
    def _upload_too_large(_: Request, __: TooLarge) -> JSONResponse:
        return _too_large(config.max_upload_size)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    # -- objects -------------------------------------------------------------------------

    @app.post("/api/v1/objects", status_code=201, summary="Upload an object")
    def upload(
        _: Write,
        file: Annotated[UploadFile, File(description="the object's bytes")],
        key: Annotated[str | None, Form(description="its key (default: the file name)")] = None,
        tier: Annotated[str | None, Form(description="its tier (default: local)")] = None,
        overwrite: Annotated[bool, Query(description="replace an existing object")] = False,
    ) -> dict[str, Any]:
        name = key or file.filename
        if not name:
            raise ApiError(400, "bad_request", "give a key, or a file name to use as the key")
        validate_key(name)
        if tier is not None and tier not in shelf.config.tiers:
            raise ApiError(
                400,
                "bad_request",
                f"unknown tier {tier!r}",
                f"known: {', '.join(shelf.config.tiers)}",
            )
        stored = shelf.put(file.file, name, tier=tier, overwrite=overwrite)
        return {
            "key": stored.key,
            "tier": stored.tier,
            "size": stored.size,
            "checksum": stored.checksum,
            "ref": stored.ref,
            "url": _url(stored.ref),
        }

    def _url(ref: str) -> str | None:
        try:
            return shelf.url(ref)
        except StoreError:
            return None

    @app.get(
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

    @app.delete("/api/v1/objects/{key:path}", summary="Delete an object")
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

    @app.get("/api/v1/urls/{key:path}", summary="A URL for an object")
    def object_url(key: str, _: Read) -> dict[str, Any]:
        location = shelf.resolve(key)
        url = shelf.url(key)
        tier = shelf.config.tiers[location.tier]
        expires = None
        if tier.scheme not in ("file", "memory") and not tier.public_url:
            expires = (utcnow() + tier.presign_ttl).isoformat()
        return {"url": url, "expires_at": expires, "key": location.key, "tier": location.tier}

    # -- lifecycle -----------------------------------------------------------------------

    @app.get("/api/v1/stats/storage", summary="Usage per tier and health")
    def storage_stats(_: Read) -> dict[str, Any]:
        return metrics.refresh_stats(shelf)

    @app.get("/api/v1/plan", summary="What the rules call for now (changes nothing)")
    def plan(
        _: Read, rule: Annotated[str | None, Query(description="only this rule id")] = None
    ) -> dict[str, Any]:
        return shelf.plan(rule=rule).as_json()

    @app.post("/api/v1/runs", status_code=202, summary="Start a run in the background")
    def start_run(_: Admin, request: RunRequest | None = None) -> dict[str, Any]:
        run_id = runs.start(request or RunRequest())
        return {"run_id": run_id, "status": "running", "href": f"/api/v1/runs/{run_id}"}

    @app.get("/api/v1/runs", summary="Run history, newest first")
    def list_runs(_: Read, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return {"runs": [record.as_json() for record in shelf.runs(limit)]}

    @app.get("/api/v1/runs/{run_id}", summary="One run")
    def get_run(run_id: str, _: Read) -> dict[str, Any]:
        record = History(shelf.catalog.engine).get(run_id)
        if record is None:
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        return record.as_json()

    # -- metrics, health, dashboard ------------------------------------------------------

    def read_unless(public: bool) -> Callable[[Request], None]:
        """A dependency: nothing if the page is public, else a token with ``read``."""

        def guard(request: Request) -> None:
            if not public:
                require("read")(request)

        return guard

    metrics_guard = read_unless(config.public_metrics)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        dependencies=[Depends(metrics_guard)],
    )
    def prometheus_metrics() -> Response:
        return Response(content=metrics.render(shelf), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/metrics/storage",
        summary="Health and per-tier figures",
        dependencies=[Depends(metrics_guard)],
    )
    def storage_health() -> dict[str, Any]:
        taken_at, body = metrics.current_stats(shelf)
        health = body.get("health", {})
        return {
            "status": health.get("status", "healthy"),
            "reasons": health.get("reasons", []),
            "tiers": body.get("tiers", {}),
            "taken_at": datetime.fromtimestamp(taken_at, UTC).isoformat(),
            "schedule": schedule_status(shelf),
        }

    @app.get("/healthz", summary="Liveness")
    def healthz() -> Response:
        try:
            revision = shelf.catalog.revision()
        except ShelflifeError as exc:
            return _error(503, "catalog_unavailable", exc.message)
        return JSONResponse({"status": "ok", "catalog": revision})

    plan_cache: dict[str, Any] = {}

    def cached_plan() -> Any:
        """A dry plan for the page, at most once a minute (planning reads every source)."""
        now = utcnow()
        if "at" not in plan_cache or now - plan_cache["at"] > timedelta(minutes=1):
            try:
                plan_cache["plan"] = shelf.plan()
            except ShelflifeError as exc:
                plan_cache["plan"] = exc
            plan_cache["at"] = now
        return plan_cache["plan"]

    dashboard_guard = read_unless(config.public_dashboard)

    @app.get(
        "/",
        summary="Dashboard",
        response_class=HTMLResponse,
        dependencies=[Depends(dashboard_guard)],
    )
    def dashboard() -> HTMLResponse:
        stats = metrics.refresh_stats(shelf)
        return HTMLResponse(render_dashboard(stats, cached_plan(), shelf.runs(10), utcnow()))

    return app
