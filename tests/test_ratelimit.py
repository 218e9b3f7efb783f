"""The token bucket of a tier's requests, with an injected clock: slots, sharing, throttles.

No test here waits on the wall clock: the limiter's clock is a variable and its sleeps
record the instant they would wait for (a slot), so every assertion is on instants the
limiter hands out.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from shelflife.base.aio import run_sync
from shelflife.base.ratelimit import (
    MAX_RETRY_AFTER,
    THROTTLE_WAIT,
    LocalSlots,
    RateLimiter,
    parse_retry_after,
)
from shelflife.base.retry import retrying
from shelflife.catalog import Catalog
from shelflife.catalog.ratelimits import CatalogSlots
from shelflife.errors import StoreThrottled, StoreTransient


class Clock:
    """A clock that moves only when told; sleeps note the instant they would wake at."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.woken: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleep_blocking(seconds)

    def sleep_blocking(self, seconds: float) -> None:
        with self._lock:
            self.woken.append(self.now + seconds)


def limiter(rate: float | None, clock: Clock, **options: object) -> RateLimiter:
    return RateLimiter(
        rate,
        clock=clock,
        sleep=clock.sleep,
        sleep_blocking=clock.sleep_blocking,
        **options,  # type: ignore[arg-type]
    )


def starts(clock: Clock, count: int) -> list[float]:
    """When ``count`` requests made at once at ``clock.now`` would start (at once: now)."""
    return sorted([*clock.woken, *[clock.now] * (count - len(clock.woken))])


def per_window(instants: list[float]) -> int:
    """The most instants in any window of one second (sliding)."""
    ordered = sorted(instants)
    most, first = 0, 0
    for last, instant in enumerate(ordered):
        while instant - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_requests_are_spaced_one_over_the_rate_apart() -> None:
    clock = Clock()
    bucket = limiter(10, clock)
    slots = [bucket.reserve() for _ in range(5)]
    assert slots == pytest.approx([1000.0, 1000.1, 1000.2, 1000.3, 1000.4])
    clock.now = 1005.0  # idle for a while: no burst saved up, the next one goes at once
    assert bucket.reserve() == 1005.0
    assert bucket.reserve() == pytest.approx(1005.1)


def test_no_second_holds_more_than_the_rate_plus_one() -> None:
    clock = Clock()
    bucket = limiter(25, clock)
    slots = [bucket.reserve() for _ in range(200)]
    assert per_window(slots) <= 26
    assert slots[-1] - slots[0] == pytest.approx(199 / 25)


def test_asyncio_tasks_share_the_bucket() -> None:
    clock = Clock()
    bucket = limiter(20, clock)

    async def many() -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(60)))

    asyncio.run(many())
    began = starts(clock, 60)
    assert len(set(began)) == 60  # every request its own slot
    assert per_window(began) <= 21
    assert began[-1] - began[0] == pytest.approx(59 / 20)


def test_threads_share_the_bucket() -> None:
    clock = Clock()
    bucket = limiter(50, clock)

    def work() -> None:
        for _ in range(25):
            bucket.acquire_blocking()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    began = starts(clock, 200)
    gaps = [b - a for a, b in itertools.pairwise(began)]
    assert min(gaps) == pytest.approx(0.02)  # no two slots closer than 1/rate
    assert per_window(began) <= 51


def test_threads_and_the_event_loop_share_the_bucket() -> None:
    clock = Clock()
    bucket = limiter(10, clock)

    async def on_loop() -> None:
        for _ in range(10):
            await bucket.acquire()

    def in_thread() -> None:
        for _ in range(10):
            bucket.acquire_blocking()

    thread = threading.Thread(target=in_thread)
    thread.start()
    run_sync(on_loop())  # shelflife's own I/O loop, as the stores use it
    thread.join()
    began = starts(clock, 20)
    assert len({round(instant, 6) for instant in began}) == 20
    assert per_window(began) <= 11


def test_a_throttle_holds_the_tier_for_the_delay_asked_then_halves_the_rate() -> None:
    clock = Clock()
    bucket = limiter(10, clock, cooldown=5.0)
    bucket.reserve()
    assert bucket.throttled(retry_after=3.0) == 3.0
    held = [bucket.reserve() for _ in range(3)]
    assert held[0] >= 1003.0  # nothing before the store's Retry-After
    assert held[1] - held[0] == pytest.approx(0.2)  # half the rate
    assert bucket.current_rate() == 5
    clock.now = 1003.0 + 5.0 + 0.01  # hold and cool-down over
    assert bucket.current_rate() == 10
    again = [bucket.reserve() for _ in range(2)]
    assert again[1] - again[0] == pytest.approx(0.1)


def test_throttles_answered_to_requests_already_sent_halve_the_rate_once() -> None:
    clock = Clock()
    bucket = limiter(40, clock)
    for _ in range(8):  # eight transfers in flight all hear "slow down"
        bucket.throttled(retry_after=1.0)
    assert bucket.current_rate() == 20
    clock.now += 1.5  # the hold is over; the store refuses again: halve again
    bucket.throttled(retry_after=1.0)
    assert bucket.current_rate() == 10
    for _ in range(10):
        clock.now += 2.0
        bucket.throttled(retry_after=1.0)
    assert bucket.current_rate() == 1.0  # never below one request a second


def test_without_a_delay_named_the_hold_backs_off_exponentially() -> None:
    clock = Clock()
    bucket = limiter(None, clock)
    first = bucket.throttled(None, attempt=1)
    assert THROTTLE_WAIT <= first <= THROTTLE_WAIT * 1.25
    third = bucket.throttled(None, attempt=3)
    assert 4 * THROTTLE_WAIT <= third <= 5 * THROTTLE_WAIT
    assert bucket.throttled(10_000.0) == MAX_RETRY_AFTER  # a delay asked is capped


def test_an_unlimited_tier_is_held_and_then_runs_at_half_its_recent_rate() -> None:
    clock = Clock(now=2000.0)
    bucket = limiter(None, clock, cooldown=10.0)
    for _ in range(30):  # 30 requests in the second before: no limit, all at once
        assert bucket.reserve() == 2000.0
    clock.now = 2001.2
    bucket.reserve()
    bucket.throttled(retry_after=2.0)
    assert bucket.current_rate() == 15
    slots = [bucket.reserve() for _ in range(15)]
    assert slots[0] >= 2003.2
    assert slots[-1] - slots[0] == pytest.approx(14 / 15)
    clock.now = 2003.2 + 10.1
    assert bucket.current_rate() is None
    assert bucket.reserve() == clock.now


@pytest.fixture
def catalog_engine(tmp_path: Path) -> Iterator[object]:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield catalog.engine
    catalog.close()


def test_two_limiters_sharing_catalog_slots_stay_under_the_rate_together(
    catalog_engine: object,
) -> None:
    clock = Clock()
    a = limiter(20, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    b = limiter(20, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    other = limiter(20, clock, slots=CatalogSlots(catalog_engine, "other"))  # type: ignore[arg-type]
    slots = []
    for _ in range(30):
        slots += [a.reserve(), b.reserve()]
    assert len(set(slots)) == 60
    assert per_window(slots) <= 21
    assert other.reserve() == clock.now  # each tier has its own slots


def test_slots_gone_by_are_not_used_late(catalog_engine: object) -> None:
    clock = Clock()
    shared = limiter(100, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    first = shared.reserve()  # takes a slice of ten slots, 1000.00 … 1000.09
    clock.now += 5.0  # idle: the slice's other nine are past
    assert shared.reserve() == clock.now
    assert first == 1000.0


def test_a_hold_reaches_every_process_of_the_catalog(catalog_engine: object) -> None:
    clock = Clock()
    a = limiter(10, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    b = limiter(10, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    a.throttled(retry_after=4.0)
    assert b.reserve() >= clock.now + 4.0  # b was never throttled itself


def test_local_slots_never_overlap() -> None:
    slots = LocalSlots()
    assert slots.reserve(0.5, 10.0) == 10.0
    assert slots.reserve(0.5, 10.0) == 10.5
    slots.hold(20.0)
    assert slots.reserve(0.5, 11.0) == 20.0


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("250ms") == 0.25
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None


def test_retrying_holds_the_tier_for_a_throttle_instead_of_backing_off() -> None:
    clock = Clock()
    bucket = limiter(10, clock)
    calls: list[float] = []

    async def operation() -> str:
        calls.append(clock.now)
        if len(calls) <= 2:
            raise StoreThrottled("slow down", retry_after=7.0)
        return "done"

    assert asyncio.run(retrying(operation, retries=3, what="t", limiter=bucket)) == "done"
    assert len(calls) == 3
    assert bucket.throttles == 2
    # each attempt after the first waited for a slot after the store's 7 s
    assert clock.woken[-2] >= 1007.0
    assert clock.woken[-1] >= 1007.0


def test_a_throttle_spends_the_retries_like_any_transient_error() -> None:
    clock = Clock()
    bucket = limiter(None, clock)

    async def always() -> str:
        raise StoreThrottled("slow down", retry_after=0.0)

    with pytest.raises(StoreThrottled):
        asyncio.run(retrying(always, retries=2, what="t", limiter=bucket))
    assert bucket.throttles == 3
    assert issubclass(StoreThrottled, StoreTransient)


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


@pytest.mark.parametrize(
    ("answer", "throttled"),
    [
        ("503 Service Unavailable: <Error><Code>SlowDown</Code><Message>Please reduce", True),
        ("503 Service Unavailable: <Error><Code>ServiceUnavailable</Code><Message>Reduce "
         "your request rate.</Message>", True),
        ("503 The server is busy.: <Error><Code>ServerBusy</Code>", True),  # Azure
        ("429 Too Many Requests", True),  # GCS
        ("503 Service Unavailable: <html>upstream gone</html>", False),
        ("500 Internal Server Error: <Error><Code>InternalError</Code>", False),
    ],
)  # fmt: skip
def test_throttling_answers_are_told_from_other_failures(answer: str, throttled: bool) -> None:
    """What obstore reports (status and body, no headers) decides: a 503 or 429 asking
    to slow down is a throttle, another 5xx an ordinary transient failure."""
    from shelflife.stores._obstore import translate_error

    error = translate_error(
        RuntimeError(f"Generic S3 error: Server returned non-2xx status code: {answer}"), "s3://b"
    )
    assert isinstance(error, StoreTransient)
    assert isinstance(error, StoreThrottled) is throttled
    if isinstance(error, StoreThrottled):
        assert error.retry_after is None  # obstore's errors carry no headers
        assert "max_requests_per_second" in (error.hint or "")


class Counting(RateLimiter):
    """An unlimited limiter that counts the slots taken."""

    def __init__(self) -> None:
        super().__init__(None)
        self.taken = 0

    async def acquire(self) -> None:
        self.taken += 1


def test_every_request_of_a_store_takes_a_slot() -> None:
    """A put, a head, a get: one each; a multipart upload: one per part plus create and
    complete, whether sent from memory or streamed; a listing: one per page; a bulk
    delete: one per 1,000 keys."""
    from obstore.store import MemoryStore

    from shelflife.stores._obstore import ObstoreStore

    mib = 1024 * 1024
    counting = Counting()
    store = ObstoreStore(
        MemoryStore(),
        "memory://counted",
        multipart_threshold=5 * mib,
        multipart_chunk_size=5 * mib,
        limiter=counting,
    )

    def taken(work: object) -> int:
        counting.taken = 0
        run_sync(work)  # type: ignore[arg-type]
        return counting.taken

    assert taken(store.put("small", b"x" * 100)) == 1
    assert taken(store.head("small")) == 1
    assert taken(store.get_bytes("small")) == 1
    assert taken(store.put("parts", b"y" * (12 * mib))) == 3 + 2  # 5 + 5 + 2 MiB

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(12):
            yield b"z" * mib

    assert taken(store.put("streamed", stream())) == 3 + 2
    assert run_sync(store.get_bytes("streamed")) == b"z" * (12 * mib)

    async def many() -> None:
        await asyncio.gather(*(store.put(f"k/{i:04d}", b"k") for i in range(2500)))

    run_sync(many())

    async def listing() -> int:
        return sum([len(chunk) async for chunk in store.list("k")])

    counting.taken = 0
    assert run_sync(listing()) == 2500
    assert counting.taken in (3, 4)  # three pages, and maybe one to learn there is no more
    assert taken(store.delete_many([f"k/{i:04d}" for i in range(2500)])) == 3


class _Answer:
    """The little of an HTTP answer azure-core's HttpResponseError reads."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code, self.reason, self.headers, self.request = status, "", headers, None

    def text(self, encoding: str | None = None) -> str:
        return ""


@pytest.mark.parametrize(
    ("status", "headers", "code", "delay"),
    [
        (503, {"Retry-After": "4"}, None, 4.0),
        (503, {"x-ms-retry-after-ms": "1500"}, None, 1.5),
        (503, {}, "ServerBusy", None),
        (429, {}, None, None),
        (503, {}, None, "transient"),
        (500, {"Retry-After": "4"}, None, "transient"),
    ],
)
def test_azure_sdk_throttles_carry_the_delay_they_ask(
    status: int, headers: dict[str, str], code: str | None, delay: float | str | None
) -> None:
    from azure.core.exceptions import HttpResponseError

    from shelflife.stores.azure import _sdk_error

    answer = HttpResponseError(message="The server is busy.", response=_Answer(status, headers))
    answer.error_code = code  # type: ignore[attr-defined]  # set by the storage SDK
    error = _sdk_error(answer, "az://c/k: properties")
    assert isinstance(error, StoreTransient)
    if delay == "transient":
        assert not isinstance(error, StoreThrottled)
    else:
        assert isinstance(error, StoreThrottled)
        assert error.retry_after == delay


# -- the catalog's I/O never holds up the I/O loop ----------------------------------------------


class Watched(CatalogSlots):
    """Catalog slots that note the thread of each call, and when one has begun."""

    def __init__(self, engine: object, tier: str) -> None:
        super().__init__(engine, tier)  # type: ignore[arg-type]
        self.threads: dict[str, list[threading.Thread]] = {"reserve": [], "hold": [], "read": []}
        self.reserving = threading.Event()

    def reserve(self, span: float, now: float) -> float:
        self.threads["reserve"].append(threading.current_thread())
        self.reserving.set()
        return super().reserve(span, now)

    def hold(self, until: float) -> None:
        self.threads["hold"].append(threading.current_thread())
        super().hold(until)

    def held_until(self) -> float:
        self.threads["read"].append(threading.current_thread())
        return super().held_until()


class WriteLock:
    """Another process's write transaction on a SQLite catalog (a scan, a run being
    recorded): held until released, or at most ``longest`` seconds (so that a limiter
    waiting on it under its own lock, as it must not, fails the test instead of hanging)."""

    def __init__(self, database: Path, longest: float = 5.0) -> None:
        import sqlite3

        self.held = True
        self.release = threading.Event()
        self._taken = threading.Event()

        def hold() -> None:
            connection = sqlite3.connect(database, isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO rate_limits VALUES ('someone else', 1)")
            self._taken.set()
            self.release.wait(longest)
            self.held = False
            connection.execute("COMMIT")
            connection.close()

        self._thread = threading.Thread(target=hold)
        self._thread.start()
        assert self._taken.wait(10)

    def end(self) -> None:
        self.release.set()
        self._thread.join()


@pytest.fixture
def catalog_file(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    database = tmp_path / "catalog.db"
    catalog = Catalog.open(f"sqlite:///{database}")
    yield catalog.engine, database
    catalog.close()


def test_a_throttle_on_the_loop_returns_while_the_catalog_is_locked_and_writes_elsewhere(
    catalog_file: tuple[object, Path],
) -> None:
    engine, database = catalog_file
    clock = Clock()
    slots = Watched(engine, "cloud")
    bucket = limiter(100, clock, slots=slots)
    bucket.reserve()  # the tier's row exists
    lock = WriteLock(database)
    seen: dict[str, object] = {}

    async def on_loop() -> None:
        seen["loop"] = threading.current_thread()
        bucket.throttled(retry_after=4.0)
        seen["throttled while locked"] = lock.held
        # the next request needs a slice after the hold: it awaits the catalog, the
        # loop goes on meanwhile
        request = asyncio.ensure_future(bucket.acquire())
        for _ in range(5):
            await asyncio.sleep(0)
        seen["loop ran while locked"] = lock.held
        seen["waiting"] = not request.done()
        lock.release.set()
        await request

    try:
        run_sync(on_loop())
    finally:
        lock.end()
    assert seen["throttled while locked"] is True
    assert seen["loop ran while locked"] is True
    assert seen["waiting"] is True
    assert bucket.idle(timeout=60)
    assert clock.woken[-1] >= 1004.0  # the slot taken waits out the hold
    (writer,) = slots.threads["hold"]
    assert writer is not seen["loop"]
    other = limiter(100, clock, slots=CatalogSlots(engine, "cloud"))  # type: ignore[arg-type]
    assert other.reserve() >= 1004.0  # the hold reached the catalog once it was free


def test_the_loop_goes_on_while_a_thread_reserves_from_a_locked_catalog(
    catalog_file: tuple[object, Path],
) -> None:
    """A thread waits on the catalog for a slice; the loop's request awaits that one
    reservation (it does not block the loop, nor reserve a second) and takes its slot
    from the slice."""
    engine, database = catalog_file
    clock = Clock()
    slots = Watched(engine, "cloud")
    bucket = limiter(100, clock, slots=slots)
    lock = WriteLock(database)
    in_thread: list[float] = []
    thread = threading.Thread(target=lambda: in_thread.append(bucket.reserve()))
    thread.start()
    assert slots.reserving.wait(10)
    seen: dict[str, object] = {}

    async def on_loop() -> None:
        seen["loop"] = threading.current_thread()
        request = asyncio.ensure_future(bucket.acquire())
        for _ in range(5):
            await asyncio.sleep(0)
        seen["loop ran while locked"] = lock.held
        seen["waiting"] = not request.done()
        lock.release.set()
        await request

    try:
        run_sync(on_loop())
    finally:
        lock.end()
        thread.join()
    assert seen["loop ran while locked"] is True
    assert seen["waiting"] is True
    assert len(slots.threads["reserve"]) == 1  # one reservation: ten slots
    assert seen["loop"] not in slots.threads["reserve"]
    assert in_thread == [1000.0]
    assert clock.woken == [pytest.approx(1000.01)]  # the loop's request: the slice's next


def test_a_slice_reserved_on_the_loop_is_reserved_in_a_thread(catalog_engine: object) -> None:
    clock = Clock()
    slots = Watched(catalog_engine, "cloud")
    bucket = limiter(100, clock, slots=slots)

    async def many() -> object:
        await asyncio.gather(*(bucket.acquire() for _ in range(25)))
        return threading.current_thread()

    loop_thread = run_sync(many())
    assert len(slots.threads["reserve"]) == 3  # 10 + 10 + 5 slots, one reservation each
    assert loop_thread not in slots.threads["reserve"]
    assert len(set(starts(clock, 25))) == 25


# -- a tier without a limit shares its holds -------------------------------------------------


def test_a_throttle_of_a_tier_without_a_limit_holds_the_other_processes(
    catalog_engine: object,
) -> None:
    clock = Clock()
    a = limiter(None, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    b_slots = Watched(catalog_engine, "cloud")
    b = limiter(None, clock, slots=b_slots, hold_check=0.5)
    assert b.reserve() == clock.now  # nothing held: at once
    a.throttled(retry_after=4.0)
    assert b.reserve() == clock.now  # read at most every 0.5 s: not yet seen
    assert len(b_slots.threads["read"]) == 1
    clock.now += 0.5
    assert b.reserve() >= 1004.0  # a's hold, read back
    assert len(b_slots.threads["read"]) == 2
    assert b.current_rate() is None  # the hold is shared, the lowered rate is a's own
    assert b_slots.threads["reserve"] == []  # no limit: no slots from the catalog


def test_on_the_loop_the_shared_hold_is_read_in_the_background(catalog_engine: object) -> None:
    clock = Clock()
    a = limiter(None, clock, slots=CatalogSlots(catalog_engine, "cloud"))  # type: ignore[arg-type]
    b_slots = Watched(catalog_engine, "cloud")
    b = limiter(None, clock, slots=b_slots)
    a.throttled(retry_after=4.0)

    async def request() -> object:
        await b.acquire()
        return threading.current_thread()

    loop_thread = run_sync(request())
    assert b.idle(timeout=60)
    (reader,) = b_slots.threads["read"]
    assert reader is not loop_thread
    assert b.held_until >= 1004.0  # the requests after the read wait for a's hold
    run_sync(request())
    assert clock.woken[-1] >= 1004.0


def test_the_engine_shares_the_holds_of_remote_tiers_without_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of one catalog (each its own limiters), an S3 tier with no limit:
    a throttle in one holds the other; a local tier shares nothing."""
    import time

    from shelflife.config.load import parse_config
    from shelflife.engine import context as engine_context
    from shelflife.engine.context import Context, tier_limiter

    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {
            "cloud": {"url": "s3://bucket/pre", "region": "us-east-1"},
            "local": {"url": f"file://{tmp_path / 'files'}"},
        },
    }
    config = parse_config(raw, base_dir=tmp_path, source="test.toml", env={})
    context = Context.open(config)
    try:
        monkeypatch.setattr(engine_context, "_LIMITERS", {})
        first = tier_limiter(context, "cloud")
        assert not tier_limiter(context, "local").shared
        monkeypatch.setattr(engine_context, "_LIMITERS", {})  # as another process has
        second = tier_limiter(context, "cloud")
        assert first is not second
        assert second.shared
        now = time.time()
        first.throttled(retry_after=60.0)
        assert second.reserve() >= now + 60.0
    finally:
        context.close()


def test_a_throttle_not_retried_still_holds_the_tier() -> None:
    clock = Clock()
    bucket = limiter(10, clock)

    async def refused() -> str:
        raise StoreThrottled("slow down", retry_after=7.0)

    with pytest.raises(StoreThrottled):
        asyncio.run(retrying(refused, retries=0, what="t", limiter=bucket))
    assert bucket.throttles == 1
    assert bucket.current_rate() == 5  # slowed down
    assert bucket.reserve() >= 1007.0  # and the tier's next request waits
