"""Commands for references and orphans: gc, pin, unpin, restore, audit, listen."""

from __future__ import annotations

import logging
import signal
from datetime import datetime
from typing import Annotated, Any

import typer

from shelflife.base.units import format_size, parse_instant
from shelflife.cli.render import (
    RichProgress,
    err,
    out,
    print_json,
    print_json_stream,
    print_refusal,
)
from shelflife.cli.state import JsonOption, TierOption, state
from shelflife.errors import RefusedError

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="list candidates; change nothing")]
RuleOption = Annotated[str | None, typer.Option("--rule", help="only this rule id")]
AtOption = Annotated[
    str | None, typer.Option("--at", help="evaluate ages as of this ISO 8601 instant")
]


def register(app: typer.Typer) -> None:
    app.command()(gc)
    app.command()(enforce)
    app.command()(recover)
    app.command()(recall)
    app.command()(pin)
    app.command()(unpin)
    app.command()(restore)
    app.command()(audit)
    app.command()(listen)


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def gc(
    dry_run: DryRunOption = False,
    rule: RuleOption = None,
    at: AtOption = None,
    mark: Annotated[int | None, typer.Option("--mark", help="sweep this saved mark")] = None,
    json: JsonOption = False,
) -> int:
    """Collect orphans: objects no reference points at, past their rule's grace."""
    shelf = state.open()
    try:
        outcome = shelf.gc(
            dry_run=dry_run,
            rule=rule,
            at=_instant(at),
            mark=mark,
            trigger="cli",
            progress=RichProgress(enabled=not json),
        )
    except RefusedError as exc:
        if json:
            print_refusal(exc.message)
        raise
    if json:
        print_json_stream(
            outcome.header_json(),
            "actions",
            (action.as_json() for action in outcome.iter_actions()),
        )
        return 1 if outcome.failed else 0
    verb = "would collect" if dry_run else "collected"
    totals = outcome.totals()
    for action, figures in totals.items():
        out.print(
            f"{verb}: {figures['objects']} objects ({format_size(figures['bytes'])}) [{action}]"
        )
    if not totals:
        out.print("no orphans to collect")
    if dry_run and outcome.mark_ids:
        marks = ", ".join(str(m) for m in outcome.mark_ids)
        out.print(
            f"saved as mark {marks}; sweep exactly this list with "
            f"'shelflife gc --mark ID' (each object is re-checked first)"
        )
    for skip in outcome.skipped[:20]:
        out.print(f"  kept {skip.tier}:{skip.key}: {skip.reason}", markup=False)
    for failure in outcome.failed:
        err.print(f"failed {failure.tier}:{failure.key}: {failure.error}", markup=False)
    if outcome.unmatched:
        err.print(
            f"{outcome.unmatched} reference values match no tier's spelling, e.g. "
            f"{outcome.unmatched_examples[:3]}",
            markup=False,
        )
    return 1 if outcome.failed else 0


def enforce(
    dry_run: DryRunOption = False,
    rule: RuleOption = None,
    at: AtOption = None,
    json: JsonOption = False,
) -> int:
    """Run the migrate rules: keep tiers under their watermarks, move aged objects."""
    shelf = state.open()
    outcome = shelf.enforce(
        dry_run=dry_run,
        rule=rule,
        at=_instant(at),
        trigger="cli",
        progress=RichProgress(enabled=not json),
    )
    data = outcome.as_json()
    if json:
        print_json(data)
        return 1 if data.get("failed") else 0
    verb = "would move" if dry_run else "moved"
    if outcome.recovered:
        out.print(f"recovered first: {outcome.recovered}")
    if not data["actions"]:
        out.print("nothing to move: every tier is within its rules")
    for pair, size in (data.get("moved_bytes") or {}).items():
        out.print(f"{verb} {format_size(size)} {pair.replace('->', ' → ')}")
    if dry_run:
        for action in data["actions"][:50]:
            out.print(
                f"  {action['tier']} → {action['to']}  {action['key']}  "
                f"{format_size(action['bytes'])}",
                markup=False,
            )
        if data["totals"]:
            figures = data["totals"]["migrate"]
            out.print(f"{verb}: {figures['objects']} objects ({format_size(figures['bytes'])})")
    for failure in data.get("failed", []):
        err.print(f"failed {failure['tier']}:{failure['key']}: {failure['error']}", markup=False)
    return 1 if data.get("failed") else 0


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
) -> None:
    """Bring an object back to a tier (local by default), rewriting its rows."""
    location = state.open().recall(key, to=to)
    err.print(f"{location.key} is on {location.tier}")


def pin(
    key: Annotated[str, typer.Argument(help="a key or a row's value")],
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 instant")] = None,
) -> None:
    """Keep an object from being collected or expired."""
    location = state.open().pin(key, _instant(until))
    err.print(f"pinned {location.key} on {location.tier}" + (f" until {until}" if until else ""))


def unpin(key: Annotated[str, typer.Argument(help="a key or a row's value")]) -> None:
    """Remove a pin."""
    location = state.open().unpin(key)
    err.print(f"unpinned {location.key} on {location.tier}")


def restore(
    key: Annotated[str, typer.Argument(help="the key it had")], tier: TierOption = None
) -> None:
    """Bring a quarantined object back."""
    location = state.open().restore(key, tier=tier)
    err.print(f"restored {location.key} on {location.tier}")


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
