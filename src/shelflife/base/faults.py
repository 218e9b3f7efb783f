"""Fault injection for crash tests: ``SHELFLIFE_KILL_AT=name:n`` kills the process with
SIGKILL the n-th time it passes the checkpoint ``name`` (``*`` matches any checkpoint).

``SHELFLIFE_DELAY_AT=name:seconds`` sleeps that long at every pass of ``name`` instead:
a slow store or worker, so that a test can act while a run is half done.

The variables are read once; without them a checkpoint costs one comparison. With
``SHELFLIFE_KILL_ONCE=PATH`` as well, only the first process to get there dies (it
creates PATH first): for worker pools, whose replacement processes would otherwise die at
the same point again.

In-process tests hook a checkpoint instead (:func:`hooked`): the n-th pass calls a
function — cutting a database off, say — and the code goes on to meet the fault.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_spec = os.environ.get("SHELFLIFE_KILL_AT", "")
_name, _, _count = _spec.partition(":")
_remaining = int(_count or 1) if _spec else 0
_delay_name, _, _delay = os.environ.get("SHELFLIFE_DELAY_AT", "").partition(":")
_delay_seconds = float(_delay or 0)
_hooks: dict[str, list[Callable[[], None]]] = {}


@contextmanager
def hooked(name: str, action: Callable[[], None], *, at: int = 1) -> Iterator[None]:
    """Call ``action`` the ``at``-th time checkpoint ``name`` is passed in this block."""
    passes = 0

    def hook() -> None:
        nonlocal passes
        passes += 1
        if passes == at:
            action()

    _hooks.setdefault(name, []).append(hook)
    try:
        yield
    finally:
        _hooks[name].remove(hook)
        if not _hooks[name]:
            del _hooks[name]


def checkpoint(name: str) -> None:
    """A point where a fault test may kill this process, or act from a hook."""
    global _remaining
    if _hooks and name in _hooks:
        for hook in list(_hooks[name]):
            hook()
    if _delay_seconds and _delay_name == name:
        time.sleep(_delay_seconds)
    if not _remaining or (_name != "*" and _name != name):
        return
    _remaining -= 1
    if _remaining == 0:
        once = os.environ.get("SHELFLIFE_KILL_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # another process died here already
        os.kill(os.getpid(), signal.SIGKILL)
