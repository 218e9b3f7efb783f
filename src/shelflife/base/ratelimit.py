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
(``acquire_blocking()``); its clock and sleeps are injected for tests. It never does a
shared source's I/O (a catalog transaction, which may wait on another process's write)
while holding its own lock, nor on an event loop's thread: on the loop a slice is reserved
in a worker thread, which the other requests await, and a hold is written in the
background.

A tier with no limit shares only its holds: a throttle is written to the shared source as
for a limited tier, and the process reads the tier's shared hold back at most every
:data:`HOLD_CHECK` seconds while it makes requests (on the loop, in the background).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
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

log = logging.getLogger("shelflife")

SLICE = 0.1  # seconds of a tier's request time a process reserves from a shared source
THROTTLE_WAIT = 1.0  # seconds the first throttle waits when the store names no delay
MAX_THROTTLE_WAIT = 20.0  # seconds, at most, of backoff after throttles naming no delay
MAX_RETRY_AFTER = 300.0  # seconds, at most, a store's Retry-After is honoured for
COOLDOWN = 10.0  # seconds a tier keeps its lowered rate after the hold ends
MIN_RATE = 1.0  # requests per second a throttled tier never goes below
HOLD_CHECK = 0.5  # seconds, at least, between two reads of an unlimited tier's shared hold


class SlotSource(Protocol):
    """Where a limiter's slots come from."""

    # Whether reserve/hold/held_until block on I/O (a database): the limiter then calls
    # them in threads, never on an event loop, and never under its own lock.
    blocking: bool

    def reserve(self, span: float, now: float) -> float:
        """Reserve the next ``span`` seconds of the tier's request time, starting no
        earlier than ``now``; return the instant the reservation starts."""
        ...

    def hold(self, until: float) -> None:
        """Reserve nothing before ``until`` (the store asked to be left alone)."""
        ...

    def held_until(self) -> float:
        """Until when the tier is held (for a tier without a limit, whose shared source
        records holds only); 0 if never."""
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

    def held_until(self) -> float:
        return self._next


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
        hold_check: float = HOLD_CHECK,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError("a rate limit must be a positive number of requests per second")
        self.rate = rate
        self.slots: SlotSource = slots or LocalSlots()
        self.shared = slots is not None and not isinstance(slots, LocalSlots)
        # Where slices come from: the shared source with a limit; without one, the tier
        # shares only its holds (its lowered rate after a throttle is this process's own).
        self._source: SlotSource = self.slots if rate is not None else LocalSlots()
        self.slice_seconds = slice_seconds if self.shared and rate is not None else 0.0
        self.clock = clock
        self._sleep = sleep
        self._sleep_blocking = sleep_blocking
        self.cooldown = cooldown
        self.hold_check = hold_check
        # Guards the state below; held for no I/O, so the I/O loop never waits on it long.
        self._lock = threading.Lock()
        # the slice of slots this process holds: the next one, its spacing, where it ends
        self._next_slot = 0.0
        self._interval = 0.0
        self._slice_end = 0.0
        # the reservation of a fresh slice in progress (one at a time), which others await
        self._reserving: concurrent.futures.Future[None] | None = None
        self.held_until = 0.0
        self._holds = 0  # holds so far: a slice reserved across one may lie inside it
        self._slow_rate: float | None = None
        self._slow_until = 0.0
        self._window = 0
        self._in_window = 0
        self._last_window = 0
        # the shared source's work handed off by the I/O loop, done by one thread at a time
        self._hold_to_write = 0.0
        self._check_wanted = False
        self._worker: threading.Thread | None = None
        self._checked = -math.inf  # when the shared hold was last read (no limit only)
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
        """Take the next slot and return the instant it starts (maybe past: go at once).
        Blocks on the shared source's I/O if a slice is due: for threads."""
        if self._check_due():
            self._check_hold()
        slot = self._from_slice(count=True)
        while slot is None:
            if not self._source.blocking:
                return self._reserve_slice()
            pending, mine = self._claim()
            if mine:
                return self._reserve_claimed(pending)
            pending.result()  # another thread's reservation: take from its slice
            slot = self._from_slice(count=False)
        return slot

    async def acquire(self) -> None:
        """Wait for this request's slot (on the I/O loop: a slice from a database is
        reserved in a worker thread, and the loop's other requests await it)."""
        if self._check_due():
            self._later(check=True)
        slot = self._from_slice(count=True)
        while slot is None:
            if not self._source.blocking:
                slot = self._reserve_slice()
                break
            pending, mine = self._claim()
            if mine:
                slot = await asyncio.to_thread(self._reserve_claimed, pending)
                break
            await _done(pending)
            slot = self._from_slice(count=False)
        delay = slot - self.clock()
        if delay > 0:
            await self._sleep(delay)

    def acquire_blocking(self) -> None:
        """Wait for this request's slot (in a thread)."""
        delay = self.reserve() - self.clock()
        if delay > 0:
            self._sleep_blocking(delay)

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

    def _claim(self) -> tuple[concurrent.futures.Future[None], bool]:
        """The reservation in progress, and whether the caller is to make it (none was)."""
        with self._lock:
            if self._reserving is None:
                self._reserving = concurrent.futures.Future()
                return self._reserving, True
            return self._reserving, False

    def _reserve_claimed(self, pending: concurrent.futures.Future[None]) -> float:
        """:meth:`_reserve_slice` for the caller that claimed ``pending``; the ones
        awaiting it go on once it is done (even should the claimant be cancelled)."""
        try:
            return self._reserve_slice()
        finally:
            with self._lock:
                if self._reserving is pending:
                    self._reserving = None
            pending.set_result(None)

    def _reserve_slice(self) -> float:
        """Reserve a slice (one slot, or ~slice_seconds worth from a shared source) and
        take its first slot. The source is asked without the lock held."""
        while True:
            with self._lock:
                now = self.clock()
                rate = self.current_rate(now)
                if rate is None:
                    return max(now, self.held_until)
                slot = self._take(now, rate)  # another reservation may have ended meanwhile
                if slot is not None:
                    return slot
                interval = 1.0 / rate
                count = max(1, round(self.slice_seconds * rate))
                after, holds = max(now, self.held_until), self._holds
            start = self._source.reserve(count * interval, after)
            with self._lock:
                if self._holds != holds:
                    continue  # a throttle meanwhile: the slice may lie inside its hold
                self._next_slot, self._slice_end = start + interval, start + count * interval
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

    def throttled(self, retry_after: float | None = None, attempt: int = 1) -> float:
        """The store refused a request for its rate: hold the tier back and slow it down.

        ``retry_after`` is the delay the store asked for, if it named one; else the hold
        grows with ``attempt`` (the request's failed tries). Returns the delay held. This
        process holds at once; a shared source hears of it from a thread (in the
        background when called on an event loop)."""
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
            held = until > self.held_until
            if held:
                self.held_until = until
                self._holds += 1
                self._slice_end = 0.0  # the slice's slots are inside the hold: drop them
            self._slow_until = max(self._slow_until, self.held_until + self.cooldown)
        if held:
            if not self.slots.blocking:
                self.slots.hold(until)
            elif _on_event_loop():
                self._later(hold=until)
            else:
                self._write_hold(until)
        return delay

    def _check_due(self) -> bool:
        """Whether to read the tier's shared hold now (no limit: nothing else would tell
        this process of another's throttle); at most every ``hold_check`` seconds."""
        if not self.shared or self.rate is not None:
            return False
        with self._lock:
            now = self.clock()
            if now < self._checked + self.hold_check:
                return False
            self._checked = now
            return True

    def _check_hold(self) -> None:
        """Read the tier's shared hold (I/O: in a thread) and keep to it here too."""
        try:
            until = self.slots.held_until()
        except Exception as exc:  # a source that failed: carry on with what is known
            log.debug("%r: reading the shared hold failed: %s", self, exc)
            return
        with self._lock:
            if until > self.held_until:
                self.held_until = until
                self._holds += 1
                self._slice_end = 0.0

    def _write_hold(self, until: float) -> None:
        try:
            self.slots.hold(until)
        except Exception as exc:  # the hold stays this process's own
            log.debug("%r: sharing a hold failed: %s", self, exc)

    def _later(self, *, hold: float = 0.0, check: bool = False) -> None:
        """Hand the shared source's I/O to a background thread (one at a time; holds
        asked meanwhile are written once, the latest)."""
        with self._lock:
            self._hold_to_write = max(self._hold_to_write, hold)
            self._check_wanted = self._check_wanted or check
            if self._worker is not None:
                return
            self._worker = threading.Thread(
                target=self._background, name="shelflife-ratelimit", daemon=True
            )
            worker = self._worker
        worker.start()

    def _background(self) -> None:
        while True:
            with self._lock:
                until, self._hold_to_write = self._hold_to_write, 0.0
                check, self._check_wanted = self._check_wanted, False
                if not until and not check:
                    self._worker = None
                    return
            if until:
                self._write_hold(until)
            if check:
                self._check_hold()

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until the background thread has written what was handed to it; whether
        it has (tests, and callers about to exit)."""
        with self._lock:
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def _after_fork(self) -> None:
        # the parent spends the slots of its slice: a forked child must not use them too
        self._lock = threading.Lock()
        self._slice_end = 0.0
        self._reserving = None
        self._worker = None
        self._hold_to_write, self._check_wanted = 0.0, False

    def _count(self, now: float) -> None:
        """Requests per whole second, for halving an unlimited tier's recent rate."""
        window = math.floor(now)
        if window != self._window:
            self._last_window = self._in_window if window == self._window + 1 else 0
            self._window, self._in_window = window, 0
        self._in_window += 1


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _done(pending: concurrent.futures.Future[None]) -> None:
    """Await another thread's ``pending`` without blocking the loop, nor cancelling it
    should this task be cancelled (others await it too)."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, woken)

    pending.add_done_callback(wake)
    await woken


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_ALL: weakref.WeakSet[RateLimiter] = weakref.WeakSet()


def _forget_parents_slices() -> None:
    for limiter in list(_ALL):
        limiter._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_slices)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header's delay in seconds: delta-seconds or an HTTP date; also
    ``x-ms-retry-after-ms``-style milliseconds when given as ``"123ms"``. None when the
    header is missing or unreadable (``nan`` and ``inf`` too)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text[:-2]) / 1000 if text.endswith("ms") else float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
