"""What every command shares: the global options and the shelf they open.

Only the options and this small state live here: the service layer (and with it the
catalog, config models and stores) is imported when a command opens the shelf, so
``shelflife --help`` and ``shelflife init`` never load it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
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

    def open(self) -> Shelf:
        """The shelf of ``--config`` (opened once per command, on first use)."""
        if self.shelf is None:
            from shelflife.service.shelf import Shelf

            self.shelf = Shelf.from_config(self.config_path)
        return self.shelf


state = State()
