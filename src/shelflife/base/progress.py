"""Progress reporting: the library calls a reporter, never prints.

The CLI passes a Rich progress bar; the Python API, the HTTP API and workers use
:class:`NullProgress` or their own.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of one long operation at a time."""

    def start(self, label: str, total: int | None = None, total_bytes: int | None = None) -> None:
        """A new phase begins (e.g. scanning one tier)."""
        ...

    def advance(self, objects: int = 1, nbytes: int = 0) -> None:
        """Some objects (and bytes) are done."""
        ...

    def finish(self) -> None:
        """The current phase ended."""
        ...


class NullProgress:
    """Ignores all progress."""

    def start(self, label: str, total: int | None = None, total_bytes: int | None = None) -> None:
        return None

    def advance(self, objects: int = 1, nbytes: int = 0) -> None:
        return None

    def finish(self) -> None:
        return None
