"""The background threads shelflife keeps: the I/O loop across a fork, and access-time
batches written off the caller's thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import datetime

import pytest

from shelflife.api.access import AccessBatcher

FORK_AFTER_USE = textwrap.dedent(
    """
    import asyncio, os, sys
    from shelflife.base.aio import run_sync

    assert run_sync(asyncio.sleep(0, result="parent")) == "parent"
    pid = os.fork()
    if pid == 0:
        # the parent's loop thread is not in this process: a call must not wait on it
        ok = run_sync(asyncio.sleep(0, result="child")) == "child"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_child_runs_store_calls_on_a_loop_of_its_own() -> None:
    """A pre-forking server (gunicorn --preload) forks after the parent used a shelf: the
    child's first call would otherwise wait forever on the parent's loop thread."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", FORK_AFTER_USE], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child's run_sync never returned")
    assert result.returncode == 0, result.stderr


def test_a_full_access_batch_is_written_by_the_batchers_thread() -> None:
    """The object routes run on the event loop: the 1,000th read must not make the loop
    wait on a catalog write."""
    written: list[tuple[str, int, str]] = []
    done = threading.Event()

    def write(tier: str, keys: list[str], now: datetime) -> None:
        written.append((tier, len(keys), threading.current_thread().name))
        done.set()

    batcher = AccessBatcher(write, interval=3600, limit=100)
    try:
        for n in range(100):
            batcher.touch("local", f"k{n}")
        assert done.wait(10), "a full batch was not written"
        assert written == [("local", 100, "shelflife-access")]
    finally:
        batcher.close()
