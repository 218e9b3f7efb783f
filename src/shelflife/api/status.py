"""Routes for watching: /metrics, health, liveness, the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from shelflife.api.dashboard import render_dashboard
from shelflife.api.deps import read_unless
from shelflife.api.errors import error_response
from shelflife.api.metrics import render
from shelflife.base.units import utcnow
from shelflife.config.model import ApiConfig
from shelflife.errors import ShelflifeError
from shelflife.service.records import current_stats, refresh_stats
from shelflife.service.shelf import Shelf


def routes(shelf: Shelf, config: ApiConfig) -> APIRouter:
    router = APIRouter()

    metrics_guard = read_unless(config.public_metrics)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        dependencies=[Depends(metrics_guard)],
    )
    def prometheus_metrics() -> Response:
        return Response(content=render(shelf), media_type=CONTENT_TYPE_LATEST)

    @router.get(
        "/metrics/storage",
        summary="Health and per-tier figures",
        dependencies=[Depends(metrics_guard)],
    )
    def storage_health() -> dict[str, Any]:
        taken_at, body = current_stats(shelf.context)
        health = body.get("health", {})
        return {
            "status": health.get("status", "healthy"),
            "reasons": health.get("reasons", []),
            "tiers": body.get("tiers", {}),
            "taken_at": datetime.fromtimestamp(taken_at, UTC).isoformat(),
            "schedule": shelf.schedule_status(),
        }

    @router.get("/healthz", summary="Liveness")
    def healthz() -> Response:
        try:
            revision = shelf.catalog.revision()
        except ShelflifeError as exc:
            return error_response(503, "catalog_unavailable", exc.message)
        return JSONResponse({"status": "ok", "catalog": revision})

    plan_cache: dict[str, Any] = {}

    def cached_plan() -> Any:
        """A dry plan for the page, at most once a minute (planning reads every source)."""
        now = utcnow()
        if "at" not in plan_cache or now - plan_cache["at"] > timedelta(minutes=1):
            try:
                plan_cache["plan"] = shelf.plan(scan=False)  # the inventory as it is
            except ShelflifeError as exc:
                plan_cache["plan"] = exc
            plan_cache["at"] = now
        return plan_cache["plan"]

    dashboard_guard = read_unless(config.public_dashboard)

    @router.get(
        "/",
        summary="Dashboard",
        response_class=HTMLResponse,
        dependencies=[Depends(dashboard_guard)],
    )
    def dashboard() -> HTMLResponse:
        stats = refresh_stats(shelf.context)
        return HTMLResponse(render_dashboard(stats, cached_plan(), shelf.runs(10), utcnow()))

    return router
