"""Fault injection for crash tests: ``SHELFLIFE_KILL_AT=name:n`` kills the process with
SIGKILL the n-th time it passes the checkpoint ``name`` (``*`` matches any checkpoint).

The variable is read once; without it a checkpoint costs one comparison. With
``SHELFLIFE_KILL_ONCE=PATH`` as well, only the first process to get there dies (it
creates PATH first): for worker pools, whose replacement processes would otherwise die at
the same point again.
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("SHELFLIFE_KILL_AT", "")
_name, _, _count = _spec.partition(":")
_remaining = int(_count or 1) if _spec else 0


def checkpoint(name: str) -> None:
    """A point where a crash test may kill this process."""
    global _remaining
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
