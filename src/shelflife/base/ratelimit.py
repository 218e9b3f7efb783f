"""Request rate limits: one limiter per tier, shared by every request the tier makes.

A tier with ``max_requests_per_second = r`` hands out *slots*: instants ``1/r`` apart at
which one request each may start (a token bucket holding one token, refilled ``r`` times
a second — the generic cell rate algorithm). A request takes the next free slot and
waits for it, so any one-second window holds at most ``r + 1`` requests as shelflife starts
them, however many transfers are in flight. Where the slots come from is a
:class:`SlotSource`: this process's own (:class:`LocalSlots`), or the catalog's, shared by
every process of every machine using that catalog; a process then reserves a slice of
slots (about 100 ms worth) at a time, and spends it before asking again.

When the store answers a request "slow down" (S3 ``SlowDown``/503, 429, Azure 503
``ServerBusy``), :meth:`RateLimiter.throttled` holds the whole tier — every request,
not only the one retried — until the delay the store asked for (``Retry-After``) or,
when it names none, an exponential backoff with jitter; and for a while after, the tier
runs at half its rate (half of what it was doing, if it has no limit), halving again
should the store keep refusing, so that a run converges instead of hammering.

The limiter works from the asyncio I/O loop (``await acquire()``) and from threads
(``acquire_blocking()``); its clock and sleeps are injected for tests.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

Clock = Callable[[], float]

SLICE = 0.1  # seconds of a tier's request time a process reserves from a shared source
THROTTLE_WAIT = 1.0  # seconds the first throttle waits when the store names no delay
MAX_THROTTLE_WAIT = 20.0  # seconds, at most, of backoff after throttles naming no delay
MAX_RETRY_AFTER = 300.0  # seconds, at most, a store's Retry-After is honoured for
COOLDOWN = 10.0  # seconds a tier keeps its lowered rate after the hold ends
MIN_RATE = 1.0  # requests per second a throttled tier never goes below


class SlotSource(Protocol):
    """Where a limiter's slots come from."""

    # Whether reserve/hold block on I/O (a database): async callers then use a thread.
    blocking: bool

    def reserve(self, span: float, now: float) -> float:
        """Reserve the next ``span`` seconds of the tier's request time, starting no
        earlier than ``now``; return the instant the reservation starts."""
        ...

    def hold(self, until: float) -> None:
        """Reserve nothing before ``until`` (the store asked to be left alone)."""
        ...


class LocalSlots:
    """Slots for this process alone."""

    blocking = False

    def __init__(self) -> None:
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self, span: float, now: float) -> float:
        with self._lock:
            start = max(self._next, now)
            self._next = start + span
            return start

    def hold(self, until: float) -> None:
        with self._lock:
            self._next = max(self._next, until)


class RateLimiter:
    """A tier's requests: at most ``rate`` a second (``None``: no limit), and held back
    after the store throttles them."""

    def __init__(
        self,
        rate: float | None = None,
        *,
        slots: SlotSource | None = None,
        slice_seconds: float = SLICE,
        clock: Clock = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        sleep_blocking: Callable[[float], object] = time.sleep,
        cooldown: float = COOLDOWN,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError("a rate limit must be a positive number of requests per second")
        self.rate = rate
        self.slots: SlotSource = slots or LocalSlots()
        self.shared = slots is not None and not isinstance(slots, LocalSlots)
        self.slice_seconds = slice_seconds if self.shared else 0.0
        self.clock = clock
        self._sleep = sleep
        self._sleep_blocking = sleep_blocking
        self.cooldown = cooldown
        self._lock = threading.Lock()
        # the slice of slots this process holds: the next one, its spacing, where it ends
        self._next_slot = 0.0
        self._interval = 0.0
        self._slice_end = 0.0
        self.held_until = 0.0
        self._slow_rate: float | None = None
        self._slow_until = 0.0
        self._window = 0
        self._in_window = 0
        self._last_window = 0
        self.throttles = 0  # how many throttling answers the tier has had
        _ALL.add(self)

    def __repr__(self) -> str:
        shown = "unlimited" if self.rate is None else f"{self.rate:g}/s"
        return f"RateLimiter({shown}{', shared' if self.shared else ''})"

    def current_rate(self, now: float | None = None) -> float | None:
        """The rate requests are spaced at now: the limit, or lower after throttles."""
        now = self.clock() if now is None else now
        if self._slow_rate is not None and now < self._slow_until:
            return self._slow_rate if self.rate is None else min(self.rate, self._slow_rate)
        return self.rate

    def reserve(self) -> float:
        """Take the next slot and return the instant it starts (maybe past: go at once)."""
        slot = self._from_slice(count=True)
        return slot if slot is not None else self._fresh_slice()

    def _from_slice(self, *, count: bool) -> float | None:
        """The next slot of the slice this process holds; None when a fresh one is due."""
        with self._lock:
            now = self.clock()
            if count:
                self._count(now)
            rate = self.current_rate(now)
            if rate is None:
                return max(now, self.held_until)
            return self._take(now, rate)

    def _fresh_slice(self) -> float:
        """Reserve a slice (one slot, or ~slice_seconds worth from a shared source) and
        take its first slot. The lock is held meanwhile: one thread reserves, the others
        then take from its slice."""
        with self._lock:
            now = self.clock()
            rate = self.current_rate(now)
            if rate is None:
                return max(now, self.held_until)
            slot = self._take(now, rate)  # another thread may have reserved one meanwhile
            if slot is not None:
                return slot
            interval = 1.0 / rate
            slots = max(1, round(self.slice_seconds * rate))
            start = self.slots.reserve(slots * interval, max(now, self.held_until))
            self._next_slot, self._slice_end = start + interval, start + slots * interval
            self._interval = interval
            return start

    def _take(self, now: float, rate: float) -> float | None:
        """The slice's next slot (the lock held); None if it has none left to give."""
        interval = 1.0 / rate
        if (
            interval != self._interval
            or self._next_slot >= self._slice_end - interval / 2
            or self._next_slot < now - interval / 2
        ):
            return None  # a slot gone by cannot be used late: its time is another's
        slot = self._next_slot
        self._next_slot += interval
        return slot

    async def acquire(self) -> None:
        """Wait for this request's slot (on the I/O loop; a slice from a database is
        reserved in a worker thread)."""
        slot = self._from_slice(count=True)
        if slot is None:
            slot = (
                await asyncio.to_thread(self._fresh_slice)
                if self.slots.blocking
                else self._fresh_slice()
            )
        delay = slot - self.clock()
        if delay > 0:
            await self._sleep(delay)

    def acquire_blocking(self) -> None:
        """Wait for this request's slot (in a thread)."""
        delay = self.reserve() - self.clock()
        if delay > 0:
            self._sleep_blocking(delay)

    def throttled(self, retry_after: float | None = None, attempt: int = 1) -> float:
        """The store refused a request for its rate: hold the tier back and slow it down.

        ``retry_after`` is the delay the store asked for, if it named one; else the hold
        grows with ``attempt`` (the request's failed tries). Returns the delay held."""
        with self._lock:
            now = self.clock()
            self.throttles += 1
            if retry_after is not None:
                delay = min(max(retry_after, 0.0), MAX_RETRY_AFTER)
            else:
                wait = min(MAX_THROTTLE_WAIT, THROTTLE_WAIT * 2 ** max(attempt - 1, 0))
                delay = random.uniform(wait, wait * 1.25)
            until = now + delay
            if now >= self.held_until:
                # a throttle after the last hold ended (not an answer to a request sent
                # before it) lowers the rate once more
                base = self.current_rate(now)
                if base is None:
                    base = float(max(self._last_window, self._in_window, 1))
                self._slow_rate = max(MIN_RATE, base / 2)
            if until > self.held_until:
                self.held_until = until
                self.slots.hold(until)
                self._slice_end = 0.0  # the slice's slots are inside the hold: drop them
            self._slow_until = max(self._slow_until, self.held_until + self.cooldown)
            return delay

    def _after_fork(self) -> None:
        # the parent spends the slots of its slice: a forked child must not use them too
        self._lock = threading.Lock()
        self._slice_end = 0.0

    def _count(self, now: float) -> None:
        """Requests per whole second, for halving an unlimited tier's recent rate."""
        window = math.floor(now)
        if window != self._window:
            self._last_window = self._in_window if window == self._window + 1 else 0
            self._window, self._in_window = window, 0
        self._in_window += 1


_ALL: weakref.WeakSet[RateLimiter] = weakref.WeakSet()


def _forget_parents_slices() -> None:
    for limiter in list(_ALL):
        limiter._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_slices)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header's delay in seconds: delta-seconds or an HTTP date; also
    ``x-ms-retry-after-ms``-style milliseconds when given as ``"123ms"``. None when the
    header is missing or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        if text.endswith("ms"):
            return max(float(text[:-2]) / 1000, 0.0)
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
