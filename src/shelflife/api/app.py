"""``shelflife serve``: the FastAPI application.

- ``GET /metrics`` — Prometheus text format, every figure read from the catalog;
- ``GET /metrics/storage`` — the health JSON: status, reasons, per-tier figures, and when
  they were taken;
- ``GET /healthz`` — liveness: the process answers and its catalog can be read.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, so a slow
catalog query never blocks the event loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from shelflife import __version__, metrics
from shelflife.errors import ShelflifeError
from shelflife.shelf import Shelf


def create_app(shelf: Shelf) -> FastAPI:
    app = FastAPI(
        title="shelflife",
        version=__version__,
        description="Storage lifecycle manager: metrics and health.",
    )

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(content=metrics.render(shelf), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metrics/storage", summary="Health and per-tier figures")
    def storage_health() -> dict[str, Any]:
        taken_at, body = metrics.current_stats(shelf)
        health = body.get("health", {})
        return {
            "status": health.get("status", "healthy"),
            "reasons": health.get("reasons", []),
            "tiers": body.get("tiers", {}),
            "taken_at": datetime.fromtimestamp(taken_at, UTC).isoformat(),
        }

    @app.get("/healthz", summary="Liveness")
    def healthz() -> Response:
        try:
            revision = shelf.catalog.revision()
        except ShelflifeError as exc:
            return JSONResponse({"status": "error", "error": exc.message}, status_code=503)
        return JSONResponse({"status": "ok", "catalog": revision})

    return app
