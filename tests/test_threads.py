"""The background threads shelflife keeps: the I/O loop across a fork and never blocked
by what it runs (a source read for a put, a synchronous call made on it), and access-time
batches written off the caller's thread."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shelflife import Shelf
from shelflife.api.access import AccessBatcher
from shelflife.base.aio import run_sync
from shelflife.config import parse_config
from shelflife.errors import UsageError

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


STORE_CALLS_THEN_EXIT = textwrap.dedent(
    """
    import asyncio
    import obstore as obs
    from obstore.store import MemoryStore
    from shelflife.base.aio import run_sync

    store = MemoryStore()

    async def work():
        await asyncio.gather(*[obs.put_async(store, f"k{i}", b"x") for i in range(8)])
        for _ in range(20):
            async for _chunk in obs.list(store, chunk_size=1):
                pass

    run_sync(work())
    print("done")
    """
)


def test_a_process_exits_cleanly_right_after_store_calls() -> None:
    """obstore completes futures from its own threads; one still finishing a callback as
    the interpreter finalizes aborted the process (SIGABRT, a few runs in a hundred)
    unless the I/O loop is stopped at exit. A race: 32 processes, so that it shows."""
    codes: list[int] = []
    for _ in range(8):
        batch = [
            subprocess.Popen(
                [sys.executable, "-c", STORE_CALLS_THEN_EXIT],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        for process in batch:
            out, err = process.communicate(timeout=60)
            assert out == b"done\n", err.decode()
            codes.append(process.returncode)
    assert codes == [0] * len(codes)


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


def _in_a_thread(call: Callable[[], object], what: str) -> object:
    """``call()`` in a daemon thread: a call that waits forever fails the test rather than
    hanging the run."""
    results: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        pytest.fail(f"{what} never returned")
    if errors:
        raise errors[0]
    return results[0]


def test_run_sync_on_the_io_thread_raises_rather_than_waiting_forever() -> None:
    async def nested() -> str:
        return run_sync(asyncio.sleep(0, result="inner"))

    with pytest.raises(UsageError, match="I/O thread") as raised:
        _in_a_thread(lambda: run_sync(nested()), "run_sync called on the I/O thread")
    assert "asyncio.to_thread" in (raised.value.hint or "")
    assert run_sync(asyncio.sleep(0, result="after")) == "after"  # the loop is still free


class _Recording(io.RawIOBase):
    """A readable source that notes the thread of every read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.threads: list[str] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.threads.append(threading.current_thread().name)
        return self._data.readinto(buffer)


@pytest.fixture
def shelf(tmp_path: Path) -> Iterator[Shelf]:
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "tiers": {"main": {"url": f"file://{tmp_path / 'main'}", "create": True}},
    }
    opened = Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))
    yield opened
    opened.close()


def test_put_reads_a_file_object_off_the_io_thread(shelf: Shelf) -> None:
    """The I/O loop serves every thread's store calls: a slow source read there would
    hold them all up."""
    source = _Recording(b"x" * (3 * 1024 * 1024))
    shelf.put(io.BufferedReader(source), "read.bin")
    assert source.threads
    assert "shelflife-io" not in source.threads
    assert shelf.get("read.bin") == b"x" * (3 * 1024 * 1024)


def test_put_of_a_shelflife_file_does_not_deadlock(shelf: Shelf) -> None:
    """Reading a shelflife:// file makes store calls of its own: on the I/O thread they
    would wait for the loop they block."""
    from shelflife.contrib.fsspec import ShelflifeFileSystem

    shelf.put(b"small", "s.txt")
    fs = ShelflifeFileSystem(shelf=shelf, skip_instance_cache=True)
    with fs.open("s.txt", "rb") as handle:
        _in_a_thread(lambda: shelf.put(handle, "copy.txt"), "put of a shelflife:// file")
    assert shelf.get("copy.txt") == b"small"
