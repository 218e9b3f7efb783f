"""Running store coroutines from synchronous code.

One event loop per process runs on a daemon thread; synchronous callers (the CLI, the
Python API, Celery tasks) submit coroutines to it and wait. This works from any thread,
including one that already runs an event loop of its own. A process forked after the loop
started (a pre-forking web server's workers, multiprocessing's ``fork``) starts its own on
first use: the parent's loop thread does not exist in the child.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from shelflife.errors import UsageError

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


def _forget_parents_loop() -> None:
    global _loop, _lock
    _loop = None  # its thread is not in this process: waiting on it would never end
    _lock = threading.Lock()  # it may have been held by another of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_loop)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on shelflife's I/O loop and return its result.

    Called on the loop's own thread (by code the loop runs: a coroutine, a callback, a
    stream read there) it would wait forever for a loop it is blocking: it raises
    :class:`~shelflife.errors.UsageError` instead."""
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()  # never to run: no "never awaited" warning
        raise UsageError(
            "a synchronous shelflife call was made on shelflife's own I/O thread, "
            "where it would wait forever",
            hint="await the store call there, or make the blocking call in a worker "
            "thread (asyncio.to_thread)",
        )
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()
