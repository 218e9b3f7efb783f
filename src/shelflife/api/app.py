"""``shelflife serve``: the HTTP API (DESIGN 5.4), /metrics, health and the dashboard.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, so store and
catalog calls never block the event loop. The upload route is the exception: it reads the
multipart body as it arrives and streams the file to its tier on the event loop
(:mod:`shelflife.api.uploads`), with no copy staged on the server's disk, and its catalog
writes are committed in groups by one writer thread
(:class:`shelflife.service.uploads.GroupCommit`). Token checks are remembered for
``[api] token_cache_ttl`` (:mod:`shelflife.api.auth`). Errors are JSON
``{"code", "message", "hint"}`` with a stable ``code`` (:mod:`shelflife.api.errors`); the
request body is counted as it arrives and refused with 413 past ``[api] max_upload_size``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shelflife import __version__
from shelflife.api import lifecycle, objects, status
from shelflife.api.access import AccessBatcher
from shelflife.api.auth import Tokens
from shelflife.api.errors import UploadLimit, install_handlers
from shelflife.service.shelf import Shelf
from shelflife.service.uploads import GroupCommit

IO_THREADS = 32  # worker threads for the event loop's blocking calls (file writes)


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
    )
    app.state.shelf, app.state.runs, app.state.access = shelf, runs, access
    app.state.tokens = Tokens(shelf.config, shelf.catalog.engine)
    app.add_middleware(UploadLimit, limit=config.max_upload_size)
    install_handlers(app, config.max_upload_size)
    app.include_router(objects.routes(shelf))
    app.include_router(lifecycle.routes(shelf, runs))
    app.include_router(status.routes(shelf, config))
    return app
