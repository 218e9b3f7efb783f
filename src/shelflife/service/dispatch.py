"""Dispatchers the service hands the executor: in-process, or Celery workers.

``[executor] backend`` chooses: ``local`` takes every batch in this process
(:class:`~shelflife.engine.executor.InProcess`); ``celery`` sends them to the workers of
``[celery]`` as ``shelflife.execute_batch`` tasks, by name (the workers' side is
:mod:`shelflife.workers.celery` and :mod:`shelflife.engine.fanout`). An application may
inject its own dispatcher (``Shelf(config, dispatcher=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from shelflife.base.extras import needs
from shelflife.base.faults import checkpoint
from shelflife.config.model import Config
from shelflife.engine.executor import Batch, Dispatcher, ErrorBudget, Executor, InProcess
from shelflife.engine.fanout import RunActions

EXECUTE_BATCH = "shelflife.execute_batch"


def celery_settings(config: Config) -> dict[str, Any]:
    """The Celery configuration of ``[celery]`` (workers and the dispatcher share it)."""
    settings = config.celery
    timeout = settings.visibility_timeout.total_seconds()
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.results,
        "task_default_queue": settings.queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": timeout},
        "result_backend_transport_options": {"visibility_timeout": timeout},
        "timezone": config.schedule.timezone,
        "enable_utc": True,
        "worker_hijack_root_logger": False,
    }


class CeleryDispatcher:
    """Sends a run's batches to Celery workers, ``[celery] wave`` batches at a time, and
    fills the run's outcome from what the workers recorded in ``run_actions``."""

    def __init__(self, config: Config) -> None:
        with needs('[executor] backend = "celery"'):
            from celery import Celery

        self.config = config
        self.app = Celery("shelflife-dispatch")
        self.app.conf.update(celery_settings(config))

    def dispatch(self, executor: Executor, batches: Iterable[Batch], budget: ErrorBudget) -> None:
        from celery import group
        from celery.result import allow_join_result

        outcome = executor.outcome
        config = self.config
        run_id = outcome.run_id or ""
        plan_now = outcome.plan.now.isoformat()
        ledger = RunActions(executor.context.catalog.engine)
        attempted = 0
        pending = iter(batches)
        while wave := list(islice(pending, config.celery.wave)):
            if halted := executor.halted():  # the run's lease is lost: send no more
                outcome.stopped = halted
                break
            signatures = [
                self.app.signature(
                    EXECUTE_BATCH,
                    args=(run_id, plan_now, [item.as_json() for item in batch]),
                    queue=config.celery.batch_queue,
                )
                for batch in wave
            ]
            results = group(signatures).apply_async()
            checkpoint("wave-sent")
            with allow_join_result():
                try:
                    results.join(propagate=True, interval=0.2)
                except Exception as exc:  # a batch raised: its actions stay failed or pending
                    outcome.stopped = f"a batch failed on a worker: {exc}"
            attempted += sum(len(batch) for batch in wave)
            if outcome.stopped:
                break
            _, _, failed = ledger.results(run_id)
            outcome.stopped = budget.exhausted(len(failed), attempted)
            if outcome.stopped:
                break
        actions, skipped, failed = ledger.results(run_id)
        outcome.actions += actions
        outcome.skipped += skipped
        outcome.failed += failed


def dispatcher_for(config: Config) -> Dispatcher:
    """The dispatcher ``[executor] backend`` names."""
    if config.executor.backend == "celery":
        return CeleryDispatcher(config)
    return InProcess()
