"""Trying again, with backoff, what failed for a reason that may pass (DESIGN I1, I2).

Only errors marked ``retryable`` in the error tree (:class:`~shelflife.errors.StoreTransient`,
:class:`~shelflife.errors.StoreUnreachable`) are tried again; every other error is
permanent and raised at once. Waits grow exponentially with jitter (tenacity's
``wait_exponential_jitter``), so many workers retrying at once do not beat in step.

Object stores' requests are retried here, one request at a time, with the tier's
:class:`~shelflife.base.ratelimit.RateLimiter`: every attempt takes a slot first, and a
throttling answer (:class:`~shelflife.errors.StoreThrottled`) holds the whole tier for the
delay the store asked for instead of the usual backoff. This layer also retries what one
request cannot: a streamed read cut short, a copy between two stores, a check that reads a
whole object back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

if TYPE_CHECKING:
    from shelflife.base.ratelimit import RateLimiter

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
    limiter: RateLimiter | None = None,
    paced: bool = False,
) -> T:
    """Await ``operation()``; on a retryable error try again up to ``retries`` more times.

    With ``limiter`` (``operation`` is one request), every attempt waits for its slot,
    and a throttling answer holds the limiter's tier for the delay the store asked for
    (the next attempt's slot comes after it) instead of backing off on its own — also
    when it is not tried again (``retries = 0``, or the last attempt): the tier's other
    requests still wait.
    ``paced``: ``operation`` takes its slots itself (a multipart upload, one per part)."""
    try:  # the common case costs one call, no retry machinery
        if limiter is not None and not paced:
            await limiter.acquire()
        return await operation()
    except Exception as exc:
        held = _held(limiter, exc, 1)  # a throttle holds the tier, retried or not
        if retries <= 0 or not is_retryable(exc):
            raise
        log.info("retrying %s after attempt 1: %s", what, exc)
        if not held:
            await asyncio.sleep(random.uniform(initial / 2, initial))

    backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if error is not None and _held(limiter, error, state.attempt_number + 1):
            return 0.0  # the next attempt's slot waits out the hold
        return backoff(state)

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info("retrying %s after attempt %d: %s", what, state.attempt_number + 1, error)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(retries),
        wait=wait,
        before_sleep=note,
        reraise=True,
    ):
        with attempt:
            if limiter is not None and not paced:
                await limiter.acquire()
            return await operation()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def _held(limiter: RateLimiter | None, exc: BaseException, attempt: int) -> bool:
    """Hold the tier if ``exc`` is a throttling answer; whether it was."""
    from shelflife.errors import StoreThrottled

    if limiter is None or not isinstance(exc, StoreThrottled):
        return False
    delay = limiter.throttled(exc.retry_after, attempt)
    log.info("the store asked to slow down: holding its requests for %.1f s", delay)
    return True
