"""Commands on single objects and references: recover, recall, pin, unpin, restore,
audit, listen."""

# No ``from __future__ import annotations`` here: Typer reads each command's signature
# (twice) when it builds the command line, and string annotations would be compiled and
# evaluated anew every time, on every start.

from typing import Annotated, Any

import typer

from shelflife.cli.render import (
    RichProgress,
    err,
    note,
    out,
    print_json,
)
from shelflife.cli.state import JsonOption, TierOption, instant, state


def register(app: typer.Typer) -> None:
    app.command()(recover)
    app.command()(recall)
    app.command()(pin)
    app.command()(unpin)
    app.command()(restore)
    app.command()(audit)
    app.command()(listen)


def recover(json: JsonOption = False) -> None:
    """Finish or undo migrations an interrupted run left unfinished."""
    outcome = state.open().recover(progress=RichProgress(enabled=not json))
    if json:
        print_json({"recovered": outcome})
    else:
        out.print("nothing to recover" if not outcome else f"recovered: {outcome}")


def recall(
    key: Annotated[str, typer.Argument(help="a key or a row's value")],
    to: Annotated[str | None, typer.Option("--to", help="tier (default: local)")] = None,
    json: JsonOption = False,
) -> None:
    """Bring an object back to a tier (local by default), rewriting its rows."""
    location = state.open().recall(key, to=to)
    if json:
        print_json({"key": location.key, "tier": location.tier})
    else:
        note(f"{location.key} is on {location.tier}")


def pin(
    key: Annotated[str, typer.Argument(help="a key or a row's value")],
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 instant")] = None,
    json: JsonOption = False,
) -> None:
    """Keep an object from being collected or expired."""
    when = instant(until)
    location = state.open().pin(key, when)
    if json:
        print_json(
            {
                "key": location.key,
                "tier": location.tier,
                "pinned": True,
                "until": None if when is None else when.isoformat(),
            }
        )
    else:
        note(f"pinned {location.key} on {location.tier}" + (f" until {until}" if until else ""))


def unpin(
    key: Annotated[str, typer.Argument(help="a key or a row's value")], json: JsonOption = False
) -> None:
    """Remove a pin."""
    location = state.open().unpin(key)
    if json:
        print_json({"key": location.key, "tier": location.tier, "pinned": False})
    else:
        note(f"unpinned {location.key} on {location.tier}")


def restore(
    key: Annotated[str, typer.Argument(help="the key it had")],
    tier: TierOption = None,
    json: JsonOption = False,
) -> None:
    """Bring a quarantined object back."""
    location = state.open().restore(key, tier=tier)
    if json:
        print_json({"key": location.key, "tier": location.tier, "restored": True})
    else:
        note(f"restored {location.key} on {location.tier}")


def audit(
    repair: Annotated[
        bool, typer.Option("--repair", help="repoint rows whose object is on another tier")
    ] = False,
    no_scan: Annotated[bool, typer.Option("--no-scan", help="trust the current inventory")] = False,
    json: JsonOption = False,
) -> int:
    """Rows that point at missing objects."""
    shelf = state.open()
    if not no_scan:
        shelf.scan(progress=RichProgress(enabled=not json))
    report = shelf.audit(repair=repair)
    if json:
        print_json(report.as_json())
    else:
        out.print(f"{report.rows} reference rows read; {len(report.dangling)} point at nothing")
        for entry in report.dangling[:100]:
            fate = (
                f"repaired → {entry.found_on}"
                if entry.repaired
                else f"found on {entry.found_on}"
                if entry.found_on
                else "missing everywhere"
            )
            out.print(f"  {entry.source}: {entry.value} ({fate})", markup=False)
    return 1 if any(not d.repaired for d in report.dangling) else 0


def listen(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True) -> None:
    """Release objects as soon as their rows are deleted (PostgreSQL LISTEN/NOTIFY)."""
    import logging
    import signal

    from shelflife.base.extras import needs

    with needs("shelflife listen"):
        from shelflife.references.listen import listen as run_listener

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    shelf = state.open()
    stopping: dict[str, Any] = {"now": False}

    def stop(*_: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stats = run_listener(shelf.sources(), shelf.release, stop=lambda: stopping["now"])
    err.print(
        f"stopped: {stats.notifications} notifications, {stats.released} released, "
        f"{stats.kept} kept, {stats.errors} errors"
    )
