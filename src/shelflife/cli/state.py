"""What every command shares: the global options and the shelf they open."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


class State:
    config_path: Path | None = None
    shelf: Shelf | None = None

    def open(self) -> Shelf:
        if self.shelf is None:
            self.shelf = Shelf.from_config(self.config_path)
        return self.shelf


state = State()
