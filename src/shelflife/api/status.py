"""Routes for watching: /metrics, health, liveness, the dashboard and its run and orphans pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from shelflife.api.dashboard import render_dashboard, render_orphans, render_problem, render_run
from shelflife.api.deps import read_unless
from shelflife.api.errors import error_response
from shelflife.api.metrics import render
from shelflife.base.units import utcnow
from shelflife.catalog.history import History
from shelflife.config.model import ApiConfig
from shelflife.errors import ShelflifeError
from shelflife.service.browse import OrphanFinder, dashboard_stats, run_actions, usage_series
from shelflife.service.records import current_stats
from shelflife.service.shelf import Shelf

PAGE = 50  # rows per page of the run and orphans pages
Page = Annotated[int, Query(ge=1, le=1_000_000, description="page number, from 1")]


def routes(shelf: Shelf, config: ApiConfig, orphans: OrphanFinder) -> APIRouter:
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
                plan_cache["plan"] = shelf.plan(scan=False, notify=False)  # inventory as is
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
        now = utcnow()
        stats = dashboard_stats(shelf.context, now)
        page = render_dashboard(
            stats, cached_plan(), shelf.runs(10), now, usage_series(shelf.context)
        )
        return HTMLResponse(page)

    @router.get(
        "/runs/{run_id}",
        summary="One run's page",
        response_class=HTMLResponse,
        dependencies=[Depends(dashboard_guard)],
    )
    def run_page(run_id: str, page: Page = 1) -> HTMLResponse:
        record = History(shelf.catalog.engine).get(run_id)
        if record is None:
            problem = render_problem(
                "run not found", f"no run {run_id!r}", "the dashboard lists the last runs"
            )
            return HTMLResponse(problem, status_code=404)
        actions = run_actions(shelf.context, run_id, limit=PAGE, offset=(page - 1) * PAGE)
        return HTMLResponse(render_run(record, actions))

    @router.get(
        "/orphans",
        summary="Orphans page",
        response_class=HTMLResponse,
        dependencies=[Depends(dashboard_guard)],
    )
    def orphans_page(
        tier: Annotated[str | None, Query(description="only this tier")] = None,
        page: Page = 1,
    ) -> HTMLResponse:
        tier = tier or None
        if (page - 1) * PAGE >= orphans.keep:
            last = -(-orphans.keep // PAGE)
            problem = render_problem(
                "orphans",
                f"page {page:,} is past the orphans listed: only the largest "
                f"{orphans.keep:,} are kept in order ({last:,} pages of {PAGE})",
                f"ask for page {last:,} or an earlier one, or list one tier at a time; "
                "the per-tier counts on the first page include every orphan",
            )
            return HTMLResponse(problem, status_code=400)
        try:
            found = orphans.page(utcnow(), tier=tier, limit=PAGE, offset=(page - 1) * PAGE)
        except ShelflifeError as exc:
            status = 400 if exc.exit_code == 2 else 409 if exc.exit_code == 3 else 503
            problem = render_problem("orphans", exc.message, exc.hint)
            return HTMLResponse(problem, status_code=status)
        return HTMLResponse(render_orphans(found, tier, list(shelf.config.tiers)))

    return router
