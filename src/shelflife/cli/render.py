"""Rendering for the terminal: progress bars, usage bars, tables. The CLI's only printer.

Rich is imported on first use, not with this module: it costs more than the rest of
``shelflife --help`` together, and ``init`` or a ``--json`` command never needs it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, cast

from shelflife.base.units import format_size
from shelflife.cli.state import state

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table
    from rich.text import Text

    from shelflife.engine.stats import TierUsage


class _LazyConsole:
    """Stands in for a Rich :class:`~rich.console.Console`, built on the first use of any
    of its attributes (printing, ``is_terminal`` …) with the options given here."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        console = self._console
        if console is None:
            from rich.console import Console

            console = self._console = Console(**self._options)
        return getattr(console, name)


out = cast("Console", _LazyConsole(highlight=False, soft_wrap=True))
err = cast("Console", _LazyConsole(stderr=True, highlight=False, soft_wrap=True))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def error_json(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    """A failure as ``--json`` prints it: ``{"error": {"code", "message", "hint"}}``."""
    return {"error": {"code": code, "message": message, "hint": hint}}


def report(message: str, hint: str | None = None) -> None:
    """``error: MESSAGE`` and ``hint: HINT`` on stderr (already redacted)."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}", markup=True, highlight=False)


def note(message: str) -> None:
    """A line for the person watching (what was written, deleted …) on stderr; none
    under ``-q``."""
    if not state.quiet:
        err.print(message, markup=False)


def print_refusal(reason: str, hint: str | None = None) -> None:
    """The run JSON of a run refused for safety (exit code 3 follows): the run's fields
    and the ``error`` every failed command's JSON has."""
    print_json(
        {
            "run_id": None,
            "status": "refused",
            "reason": reason,
            "actions": [],
            "totals": {},
            "failed": [],
            **error_json("refused", reason, hint),
        }
    )


def print_json_stream(
    head: dict[str, Any], lists: Mapping[str, Iterable[Any]], *, to: IO[str] | None = None
) -> None:
    """Print ``{**head, name: [items…] …}`` writing one item at a time (bounded memory),
    on stdout or into ``to``."""
    write = (to or sys.stdout).write
    write("{")
    first = True
    for name, value in head.items():
        write(("" if first else ",") + f"\n  {json.dumps(name)}: {json.dumps(value, default=str)}")
        first = False
    for name, items in lists.items():
        write(("" if first else ",") + f"\n  {json.dumps(name)}: [")
        first = False
        for index, item in enumerate(items):
            write(("," if index else "") + "\n    " + json.dumps(item, default=str))
        write("\n  ]")
    write("\n}\n")


def print_json_whole(head: dict[str, Any], lists: Mapping[str, Iterable[Any]]) -> None:
    """:func:`print_json_stream` in bounded memory, but nothing on stdout until the lists
    have all been read: a failure half-way leaves stdout empty for the error object."""
    import shutil
    import tempfile

    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+") as spool:
        print_json_stream(head, lists, to=spool)
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout)


class RichProgress:
    """A Rich progress bar per phase; silent when stderr is not a terminal or --json."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and not state.quiet and err.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._bytes = 0

    def start(self, label: str, total: int | None = None, total_bytes: int | None = None) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("objects"),
            TextColumn("{task.fields[size]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self._progress.start()
        self._bytes = 0
        self._task = self._progress.add_task(label, total=total, size="")

    def advance(self, objects: int = 1, nbytes: int = 0) -> None:
        if self._progress is None or self._task is None:
            return
        self._bytes += nbytes
        self._progress.update(self._task, advance=objects, size=format_size(self._bytes))

    def finish(self) -> None:
        if self._progress is not None:
            if self._task is not None:
                done = self._progress.tasks[self._task].completed
                self._progress.update(self._task, total=done, completed=done)
            self._progress.stop()
        self._progress = None
        self._task = None


__all__ = [
    "RichProgress",
    "err",
    "error_json",
    "note",
    "out",
    "print_json",
    "usage_bar",
    "usage_table",
]


def usage_bar(tier: TierUsage, width: int = 20) -> Text:
    """A bar filled to the tier's usage, with ╎ at the low and ┃ at the high watermark."""
    from rich.text import Text

    ratio = tier.usage_ratio
    if ratio is None:
        return Text("no capacity set", style="dim")
    filled = min(width, round(ratio * width))
    low, high = round(tier.low_watermark * width), round(tier.high_watermark * width)
    color = (
        "green"
        if ratio <= tier.low_watermark
        else ("yellow" if ratio <= tier.high_watermark else "red")
    )
    bar = Text()
    for cell in range(width):
        if cell == high:
            bar.append("┃", style="bold magenta")
        elif cell == low:
            bar.append("╎", style="magenta")
        else:
            bar.append("█" if cell < filled else "░", style=color if cell < filled else "dim")
    bar.append(f" {ratio:.0%}")
    return bar


def usage_table(usage: list[TierUsage]) -> Table:
    """The stats table: one row per tier, with its usage bar."""
    from rich.table import Table

    table = Table(
        title="Storage by tier",
        title_justify="left",
        caption="usage bar: ╎ low watermark, ┃ high watermark",
        caption_justify="left",
    )
    table.add_column("tier", style="bold")
    table.add_column("objects", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("orphans", justify="right")
    table.add_column("capacity", justify="right")
    table.add_column("usage", no_wrap=True)
    for tier in usage:
        orphans = (
            "?"
            if tier.orphan_objects is None
            else (f"{tier.orphan_objects:,} ({format_size(tier.orphan_bytes or 0)})")
        )
        if tier.quarantined_objects:
            orphans += f"\n+{tier.quarantined_objects:,} in quarantine"
        table.add_row(
            tier.name,
            f"{tier.objects:,}",
            format_size(tier.bytes),
            orphans,
            "—" if tier.capacity is None else format_size(tier.capacity),
            usage_bar(tier),
        )
    return table
