"""``shelflife serve``: the HTTP API, /metrics, health and the dashboard.

The object routes (upload, download, delete, URLs) are ``async`` and go through
:class:`shelflife.service.aio.AsyncShelf`: store calls are awaited on the event loop, and
what is synchronous — catalog reads, application-database reads — runs in a thread. An
upload reads the multipart body as it arrives and streams the file to its tier
(:mod:`shelflife.api.uploads`), with no copy staged on the server's disk, and its catalog
writes are committed in groups by one writer thread
(:class:`shelflife.service.uploads.GroupCommit`); access times are written in batches by
:class:`shelflife.api.access.AccessBatcher`'s own thread. The other handlers are plain
``def`` functions, which FastAPI runs in its thread pool. Token checks are remembered for
``[api] token_cache_ttl`` (:mod:`shelflife.api.auth`). Errors are JSON
``{"code", "message", "hint"}`` with a stable ``code`` (:mod:`shelflife.api.errors`); the
request body is counted as it arrives and refused with 413 past ``[api] max_upload_size``.
``/docs`` loads Swagger UI from files shipped in a Python package (``fastapi-offline``),
served under :data:`DOCS_ASSETS`: the page makes no request beyond this server. There is
no ``/redoc``: ReDoc's bundle always loads its logo from its vendor's site.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from shelflife import __version__
from shelflife.api import actionlog, lifecycle, objects, status
from shelflife.api.access import AccessBatcher
from shelflife.api.auth import Tokens
from shelflife.api.errors import UploadLimit, install_handlers
from shelflife.errors import MissingExtraError
from shelflife.service.browse import OrphanFinder
from shelflife.service.shelf import Shelf
from shelflife.service.uploads import GroupCommit

IO_THREADS = 32  # worker threads for the event loop's blocking calls (file writes)
DOCS_ASSETS = "/docs-assets"  # where Swagger UI's and ReDoc's files are served


def create_app(shelf: Shelf) -> FastAPI:
    config = shelf.config.api
    runs = lifecycle.BackgroundRuns(shelf)
    access = AccessBatcher(lambda tier, keys, now: shelf.catalog.touch(tier, keys, now))
    shelf.access = access.touch
    uploads = GroupCommit(shelf.catalog)
    shelf.uploads = uploads

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What the server holds from start-up (modules, the app, the config) lives as long
        # as it does: out of the cyclic collector's sight, a full collection no longer walks
        # those ~10^5 objects (about 90 ms on a 2-core machine, a pause every request felt).
        gc.freeze()
        # Uploads write and fsync in worker threads, which spend their time waiting on the
        # disk: Python's default of cores + 4 threads capped uploads at what 6 fsyncs in
        # flight allow, while the disk commits concurrent fsyncs together.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="shelflife-io")
        )
        yield
        access.close()  # the last access times reach the catalog
        uploads.close()

    app = FastAPI(
        title="shelflife",
        version=__version__,
        description="Storage lifecycle manager: objects, URLs, stats, plans, runs, metrics.",
        lifespan=lifespan,
        docs_url=None,  # served below from packaged files, not a CDN
        redoc_url=None,
    )
    app.state.shelf, app.state.runs, app.state.access = shelf, runs, access
    app.state.tokens = Tokens(shelf.config, shelf.catalog.engine)
    app.add_middleware(UploadLimit, limit=config.max_upload_size)
    install_handlers(app, config.max_upload_size)
    orphans = OrphanFinder(shelf.context)
    app.include_router(objects.routes(shelf))
    app.include_router(lifecycle.routes(shelf, runs, orphans))
    app.include_router(status.routes(shelf, config, orphans))
    app.include_router(actionlog.routes(shelf))
    _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the files the ``fastapi-offline`` package ships."""
    try:
        assets = files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        raise MissingExtraError("the API docs (/docs)", "fastapi_offline", "server") from None
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} — API",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # no badge from the public validator service
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
