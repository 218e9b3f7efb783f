"""Dispatchers the service hands the executor: in-process, or Celery workers.

``[executor] backend`` chooses: ``local`` takes every batch in this process
(:class:`~shelflife.engine.executor.InProcess`); ``celery`` sends them to the workers of
``[celery]`` as ``shelflife.execute_batch`` tasks, by name (the workers' side is
:mod:`shelflife.workers.celery` and :mod:`shelflife.engine.fanout`). An application may
inject its own dispatcher (``Shelf(config, dispatcher=...)``).

A wave's batches are waited for through their results, and, when those cannot come, through
the catalog's ``run_actions`` ledger, which the workers write as they go:

- the broker or the result backend unreachable while waiting (restarted, say), or a batch
  ended on its worker when the broker connection broke (:func:`celery_settings` asks for
  that: RabbitMQ delivers such a batch again at once, and it must not run beside its
  copy): the dispatcher keeps polling; a wave is over once the ledger holds a final
  outcome for each of its actions, whether or not the batches' results ever arrive (a
  Redis restarted without persistence loses them); the catalog away for a moment too
  only delays the polling, within the same bound;
- no progress in the ledger for ``2 × [celery] visibility_timeout`` plus one restore sweep
  (a lost batch is delivered again within ``visibility_timeout`` and a sweep, and a batch
  runs for less than ``visibility_timeout``, or Redis would deliver it twice): the batches
  are lost, or no worker consumes the batch queue; the run stops partial, saying so, and
  the next run takes what is left;
- the broker unreachable when sending: sending is retried for the same bound, then the
  run stops partial after waiting for the batches already sent.

Redis restores the tasks of a worker that died (its whole process group killed, say) once
they have been held for ``visibility_timeout``, in sweeps that kombu runs every 100 s by
default; :func:`celery_settings` sweeps every quarter of ``visibility_timeout`` (1 s to
100 s), so a replacement worker gets them soon after.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from shelflife.base.extras import needs
from shelflife.base.faults import checkpoint
from shelflife.config.model import Config
from shelflife.engine.executor import Batch, Dispatcher, ErrorBudget, Executor, InProcess
from shelflife.engine.fanout import FINAL, RunActions
from shelflife.errors import CatalogError
from shelflife.model.actions import Action, Failure, Skip

EXECUTE_BATCH = "shelflife.execute_batch"
POLL = 2.0  # seconds between looks at the ledger while a wave's results do not come


def restore_sweep(config: Config) -> float:
    """Seconds between Redis's sweeps for tasks held longer than ``visibility_timeout``."""
    return min(max(config.celery.visibility_timeout.total_seconds() / 4, 1.0), 100.0)


def stall_limit(config: Config) -> float:
    """Seconds without progress in the ledger after which a wave's batches are lost."""
    return 2 * config.celery.visibility_timeout.total_seconds() + restore_sweep(config)


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
        # a batch whose broker connection broke is ended, not left running beside its
        # redelivered copy (RabbitMQ requeues it at once); it is settled when taken again
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": timeout,
            # kombu sweeps every interval × throttle seconds (100 s by default)
            "unacked_restore_interval": restore_sweep(config) / 10,
            "unacked_restore_throttle": 10,
        },
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
            sent, unsent = self._send(run_id, plan_now, wave)
            checkpoint("wave-sent")
            outcome.stopped = self._wait(sent, wave[: len(sent.results)], ledger, run_id) or unsent
            attempted += sum(len(batch) for batch in wave)
            if outcome.stopped:
                break
            _, _, failed = self._results(ledger, run_id)
            outcome.stopped = budget.exhausted(len(failed), attempted)
            if outcome.stopped:
                break
        if not outcome.stopped:  # lost during the last wave: its dropped batches show
            outcome.stopped = executor.halted()
        actions, skipped, failed = self._results(ledger, run_id)
        outcome.actions += actions
        outcome.skipped += skipped
        outcome.failed += failed

    def _results(
        self, ledger: RunActions, run_id: str
    ) -> tuple[list[Action], list[Skip], list[Failure]]:
        """The ledger's record of the run, read again while the catalog is away (a bound)."""
        deadline = time.monotonic() + stall_limit(self.config)
        while True:
            try:
                return ledger.results(run_id)
            except (CatalogError, OperationalError, InterfaceError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL)

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        from kombu.exceptions import OperationalError as Unreachable

        broker = self.app.connection_for_write().connection_errors
        backend = getattr(self.app.backend, "connection_errors", ())
        return (OSError, Unreachable, *broker, *backend)

    def _send(self, run_id: str, plan_now: str, wave: list[Batch]) -> tuple[Any, str | None]:
        """Send a wave's batches: their results, and why the rest were not sent."""
        from celery.result import ResultSet

        sent = ResultSet([])
        policy = {
            "max_retries": max(int(stall_limit(self.config) / 2), 3),  # 2 s apart at most
            "interval_start": 0.5,
            "interval_step": 0.5,
            "interval_max": 2,
        }
        for batch in wave:
            try:
                sent.add(
                    self.app.send_task(
                        EXECUTE_BATCH,
                        args=(run_id, plan_now, [item.as_json() for item in batch]),
                        queue=self.config.celery.batch_queue,
                        retry=True,
                        retry_policy=policy,
                    )
                )
            except self._connection_errors() as exc:
                return sent, f"the broker could not be reached to send batches: {exc}"
        return sent, None

    def _wait(
        self, results: Any, wave: Sequence[Batch], ledger: RunActions, run_id: str
    ) -> str | None:
        """Wait for a wave's batches (see the module's docstring); why the run must stop."""
        from celery.exceptions import TaskRevokedError
        from celery.exceptions import TimeoutError as ResultTimeout
        from celery.result import allow_join_result

        errors = self._connection_errors()
        stall = stall_limit(self.config)
        size = sum(len(batch) for batch in wave)
        progress, settled, since = -1, 0, time.monotonic()
        while size:
            try:
                with allow_join_result():
                    results.join(propagate=True, interval=0.2, timeout=POLL)
                return None
            except ResultTimeout:
                pass
            except (TaskRevokedError, *errors):
                # the result backend is away, or a batch was ended on a worker whose broker
                # connection broke (it is delivered again, or lost): the ledger tells
                time.sleep(POLL)
            except Exception as exc:  # a batch raised: its actions stay failed or pending
                return f"a batch failed on a worker: {exc}"
            try:
                recorded = [ledger.outcomes(run_id, batch) for batch in wave]
            except (CatalogError, OperationalError, InterfaceError):
                recorded = []  # the catalog is away too: no news this time
            if recorded:
                settled = sum(1 for found in recorded for kept in found.values() if kept in FINAL)
                if settled == size:
                    return None  # every action settled, whatever became of the results
                seen = settled + sum(len(found) for found in recorded)  # started, and settled
                if seen != progress:
                    progress, since = seen, time.monotonic()
            if time.monotonic() - since > stall:
                return (
                    f"no worker recorded progress for {round(stall)} s on "
                    f"{size - settled} actions: their batches were lost (the broker or the "
                    f"result backend restarted?) or no worker consumes queue "
                    f"{self.config.celery.batch_queue!r}; the next run takes them"
                )
        return None


def dispatcher_for(config: Config) -> Dispatcher:
    """The dispatcher ``[executor] backend`` names."""
    if config.executor.backend == "celery":
        return CeleryDispatcher(config)
    return InProcess()
