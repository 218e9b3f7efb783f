"""Trying again, with backoff, what failed for a reason that may pass (DESIGN I1, I2).

Only errors marked ``retryable`` in the error tree (:class:`~shelflife.errors.StoreTransient`,
:class:`~shelflife.errors.StoreUnreachable`) are tried again; every other error is
permanent and raised at once. Waits grow exponentially with jitter (tenacity's
``wait_exponential_jitter``), so many workers retrying at once do not beat in step.

Stores already retry single requests in their HTTP client; this layer retries what the
client cannot: a streamed read cut short, a copy between two stores, a check that reads a
whole object back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

T = TypeVar("T")

log = logging.getLogger("shelflife.retry")

INITIAL_WAIT = 0.1  # seconds before the first retry
MAX_WAIT = 5.0  # seconds, at most, between two attempts


def is_retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    retries: int,
    what: str,
    initial: float = INITIAL_WAIT,
    maximum: float = MAX_WAIT,
) -> T:
    """Await ``operation()``; on a retryable error try again up to ``retries`` more times."""
    try:  # the common case costs one call, no retry machinery
        return await operation()
    except Exception as exc:
        if retries <= 0 or not is_retryable(exc):
            raise
        log.info("retrying %s after attempt 1: %s", what, exc)
    await asyncio.sleep(random.uniform(initial / 2, initial))

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info("retrying %s after attempt %d: %s", what, state.attempt_number + 1, error)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(retries),
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        before_sleep=note,
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
