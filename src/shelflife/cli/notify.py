"""``shelflife notify``: the ``[[notify]]`` webhooks."""

# No ``from __future__ import annotations`` here: Typer reads each command's signature
# (twice) when it builds the command line, and string annotations would be compiled and
# evaluated anew every time, on every start.

from typing import Annotated

import typer

from shelflife.cli.render import out, print_json
from shelflife.cli.state import JsonOption, state
from shelflife.errors import UsageError

notify_app = typer.Typer(
    help="Webhooks told of runs, health changes and large plans ([[notify]]).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the main app's
)


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    name: Annotated[
        str | None, typer.Option("--name", help="only this target (its name, or notify[INDEX])")
    ] = None,
    json: JsonOption = False,
) -> int:
    """Send a test event to every [[notify]] target now, whatever its events; exit 1 if
    one was not delivered."""
    from rich.markup import escape

    from shelflife.config import load_config
    from shelflife.service.notify import send_test, targets

    config = load_config(state.config_path)
    known = [target.name for target in targets(config)]
    if not known:
        raise UsageError(
            "no [[notify]] targets in the configuration",
            hint="add a [[notify]] entry with a url (see the README's Notifications section)",
        )
    if name is not None and name not in known:
        raise UsageError(f"no [[notify]] target named {name!r}", hint=f"known: {known}")
    results = send_test(config, name)
    if json:
        print_json(
            {
                "ok": all(r.delivered for r in results),
                "deliveries": [r.as_json() for r in results],
            }
        )
    else:
        for result in results:
            mark = "[green]sent[/]" if result.delivered else "[bold red]FAIL[/]"
            detail = (
                f"HTTP {result.status}" if result.delivered else (result.error or "not delivered")
            )
            tries = f", {result.attempts} attempts" if result.attempts > 1 else ""
            out.print(f"{mark:>20} {escape(f'{result.target} {result.url}: {detail}{tries}')}")
    return 0 if all(r.delivered for r in results) else 1
