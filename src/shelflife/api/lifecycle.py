"""Routes for the lifecycle: stats, plans, runs (started in the background)."""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from shelflife.api.deps import Admin, Read
from shelflife.api.errors import ApiError
from shelflife.base.units import utcnow
from shelflife.catalog.history import History
from shelflife.engine.planning import new_id
from shelflife.errors import LockedError
from shelflife.service.browse import OrphanFinder, run_actions
from shelflife.service.records import refresh_stats
from shelflife.service.runs import choose_rules
from shelflife.service.shelf import Shelf

LOG = logging.getLogger("shelflife.api")


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
                choose_rules(self.shelf.context, request.rule)  # an unknown rule: 400 now
            run_id = new_id("run", utcnow())
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


def routes(shelf: Shelf, runs: BackgroundRuns, orphans: OrphanFinder) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/stats/storage", summary="Usage per tier and health")
    def storage_stats(_: Read) -> dict[str, Any]:
        return refresh_stats(shelf.context)

    # the storage service's path for the same figures (docs/migrating.md)
    router.add_api_route(
        "/stats/storage",
        storage_stats,
        methods=["GET"],
        summary="Usage per tier and health (the storage service's path)",
        deprecated=True,
    )

    @router.get(
        "/api/v1/plan",
        summary="What the rules call for now (changes nothing)",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/json": {}}}},
    )
    def plan(
        _: Read,
        rule: Annotated[str | None, Query(description="only this rule id")] = None,
        scan: Annotated[
            bool, Query(description="scan every tier first (else: plan on the inventory)")
        ] = False,
    ) -> StreamingResponse:
        """The plan shape of DESIGN 5.2, streamed an action at a time from the catalog."""
        result = shelf.plan(rule=rule, scan=scan)
        return StreamingResponse(result.json_chunks(), media_type="application/json")

    @router.post("/api/v1/runs", status_code=202, summary="Start a run in the background")
    def start_run(_: Admin, request: RunRequest | None = None) -> dict[str, Any]:
        run_id = runs.start(request or RunRequest())
        return {"run_id": run_id, "status": "running", "href": f"/api/v1/runs/{run_id}"}

    @router.get("/api/v1/runs", summary="Run history, newest first")
    def list_runs(_: Read, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return {"runs": [record.as_json() for record in shelf.runs(limit)]}

    @router.get("/api/v1/runs/{run_id}", summary="One run")
    def get_run(run_id: str, _: Read) -> dict[str, Any]:
        record = History(shelf.catalog.engine).get(run_id)
        if record is None:
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        return record.as_json()

    @router.get("/api/v1/runs/{run_id}/actions", summary="The objects a run acted on, paged")
    def get_run_actions(
        run_id: str,
        _: Read,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        """What the catalog itemizes: a fanned-out run's actions, else the run's moves."""
        if History(shelf.catalog.engine).get(run_id) is None:
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        found = run_actions(shelf.context, run_id, limit=limit, offset=offset)
        return {"run_id": run_id, **found.as_json()}

    @router.get("/api/v1/orphans", summary="Orphaned objects, largest first, paged")
    def list_orphans(
        _: Read,
        tier: Annotated[str | None, Query(description="only this tier")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        """Objects no reference names (told as ``gc --dry-run`` tells them, grace ignored),
        with per-tier counts of every orphan. Only the largest 10,000 are listed in order
        (``truncated`` says there are more; an offset past them is refused with 400), and a
        listing is reused for a minute, so pages within it do not re-read the references."""
        return orphans.page(utcnow(), tier=tier or None, limit=limit, offset=offset).as_json()

    return router
