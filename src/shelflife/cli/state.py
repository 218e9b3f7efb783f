"""What every command shares: the global options and the shelf they open.

Only the options and this small state live here: the service layer (and with it the
catalog, config models and stores) is imported when a command opens the shelf, so
``shelflife --help`` and ``shelflife init`` never load it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shelflife.base.units import parse_instant

if TYPE_CHECKING:
    from shelflife.service.shelf import Shelf

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="shelflife.toml to use (else $SHELFLIFE_CONFIG, ./shelflife.toml, the default)",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print JSON on stdout (errors too) instead of text")
]
TierOption = Annotated[str | None, typer.Option("--tier", "-t", help="tier name")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="plan only; change nothing")]
RuleOption = Annotated[str | None, typer.Option("--rule", help="only this rule id")]
AtOption = Annotated[
    str | None, typer.Option("--at", help="evaluate ages as of this ISO 8601 instant")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="allow deletions above max_delete / max_delete_bytes")
]
NoScanOption = Annotated[
    bool,
    typer.Option(
        "--no-scan", help="plan on the current inventory (a never-scanned tier is an error)"
    ),
]
MAX_TRANSFERS = 256  # [executor] concurrency's own upper bound
TransfersOption = Annotated[
    int | None,
    typer.Option(
        "--transfers",
        metavar="N",
        min=1,
        max=MAX_TRANSFERS,
        help="actions in flight at once for this run ([executor] concurrency)",
    ),
]
MaxDeleteOption = Annotated[
    int | None,
    typer.Option(
        "--max-delete",
        metavar="N",
        min=1,
        help="deletions this run may take without --yes ([executor] max_delete)",
    ),
]


def instant(value: str | None) -> datetime | None:
    """An ``--at`` / ``--until`` value; a usage error (exit 2) if it is not ISO 8601."""
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


class State:
    config_path: Path | None = None
    shelf: Shelf | None = None
    quiet: bool = False  # -q: no progress bars, no notes on stderr (errors still)

    def __init__(self) -> None:
        self.executor: dict[str, Any] = {}

    def override(self, *, transfers: int | None = None, max_delete: int | None = None) -> None:
        """``--transfers`` / ``--max-delete``: ``[executor]`` settings for this run only
        (before the shelf is opened)."""
        if transfers is not None:
            self.executor["concurrency"] = transfers
        if max_delete is not None:
            self.executor["max_delete"] = max_delete

    def open(self) -> Shelf:
        """The shelf of ``--config`` (opened once per command, on first use)."""
        if self.shelf is None:
            from shelflife.service.shelf import Shelf

            if self.executor:
                from shelflife.config import load_config

                config = load_config(self.config_path)
                executor = config.executor.model_copy(update=self.executor)
                self.shelf = Shelf(config.model_copy(update={"executor": executor}))
            else:
                self.shelf = Shelf.from_config(self.config_path)
        return self.shelf


state = State()
