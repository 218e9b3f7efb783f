"""Fault injection for crash tests: ``SHELFLIFE_KILL_AT=name:n`` kills the process with
SIGKILL the n-th time it passes the checkpoint ``name`` (``*`` matches any checkpoint).

The variable is read once; without it a checkpoint costs one comparison.
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
        os.kill(os.getpid(), signal.SIGKILL)
