"""Last-access times recorded in batches: a read marks its object in memory, and one
statement per tier writes them at most every ``interval`` seconds (or at 1,000 pending).

The writes happen on the batcher's own thread, never in the caller's: the object routes run
on the event loop, which a catalog write would stall for every request in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from shelflife.base.units import utcnow


class AccessBatcher:
    def __init__(
        self,
        write: Callable[[str, list[str], datetime], None],
        interval: float = 5.0,
        limit: int = 1000,
    ) -> None:
        self._write = write
        self._interval = interval
        self._limit = limit
        self._pending: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shelflife-access", daemon=True)
        self._thread.start()

    def touch(self, tier: str, key: str) -> None:
        with self._lock:
            self._pending.setdefault(tier, set()).add(key)
            full = sum(len(keys) for keys in self._pending.values()) >= self._limit
        if full:
            self._wake.set()  # the batcher's thread writes them now

    def flush(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        now = utcnow()
        for tier, keys in pending.items():
            self._write(tier, sorted(keys), now)
        return sum(len(keys) for keys in pending.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # a catalog hiccup must not kill the thread; retry next tick
                import logging

                logging.getLogger("shelflife.api").exception("recording access times failed")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
