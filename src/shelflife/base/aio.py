"""Running store coroutines from synchronous code.

One event loop per process runs on a daemon thread; synchronous callers (the CLI, the
Python API, Celery tasks) submit coroutines to it and wait. This works from any thread,
including one that already runs an event loop of its own. A process forked after the loop
started (a pre-forking web server's workers, multiprocessing's ``fork``) starts its own on
first use: the parent's loop thread does not exist in the child. At exit the loop is stopped
and its thread joined before the interpreter finalizes (see :func:`_stop_at_exit`).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from shelflife.errors import UsageError

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="shelflife-io", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


@atexit.register
def _stop_at_exit() -> None:
    """Stop the I/O loop and wait for its thread before the interpreter finalizes.

    obstore completes its futures from its own (Rust) threads through
    ``loop.call_soon_threadsafe``, which writes to the loop's wake-up socket with the GIL
    released. A thread still waiting to take the GIL back when finalization begins is
    ended by the interpreter, and a Rust thread cannot be ended that way: the process
    aborts (SIGABRT after the command's output, seen once in a few dozen ``shelflife ls``
    of an S3 tier). atexit functions run while other threads may still take the GIL;
    giving it up here lets such a thread finish its callback first."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None  # a later call (another exit function) starts a new loop
    if loop is None or thread is None or not thread.is_alive() or loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=2.0)
    time.sleep(0.005)  # the GIL to any store thread finishing a callback


def _forget_parents_loop() -> None:
    global _loop, _thread, _lock
    _loop = _thread = None  # its thread is not in this process: waiting on it would never end
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
