"""Running store coroutines from synchronous code.

One event loop per process runs on a daemon thread; synchronous callers (the CLI, the
Python API, Celery tasks) submit coroutines to it and wait. This works from any thread,
including one that already runs an event loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="shelflife-io", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on shelflife's I/O loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, _background_loop()).result()
