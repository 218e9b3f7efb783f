"""``shelflife log``: what happened to an object, and why (the action log)."""

# No ``from __future__ import annotations``: Typer reads the signature (see lifecycle.py).

import json as jsonlib
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from shelflife.base.units import format_size, parse_instant_or_ago, utcnow
from shelflife.cli.render import note, out, print_json
from shelflife.cli.state import JsonOption, state
from shelflife.errors import UsageError

if TYPE_CHECKING:
    from shelflife.catalog.actionlog import LogEntry, LogFilter

OUTCOMES = ("done", "skipped", "failed")


def register(app: typer.Typer) -> None:
    app.command("log")(log)


def _when(value: str | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant_or_ago(value, now)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def log(
    key: Annotated[
        str | None,
        typer.Option(
            "--key", "-k", help="a key, or a value a reference column holds (any tier's spelling)"
        ),
    ] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="only this rule id")] = None,
    run: Annotated[str | None, typer.Option("--run", help="only this run id")] = None,
    tier: Annotated[
        str | None, typer.Option("--tier", "-t", help="acted on this tier, or moved to it")
    ] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="done, skipped or failed")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="recorded since: '7d' ago, or an ISO 8601 time")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="recorded before: '1d' ago, or an ISO 8601 time")
    ] = None,
    after: Annotated[
        int, typer.Option("--after", min=0, help="only entries with ids above this (a cursor)")
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            min=1,
            help="how many: the newest 50 by default; --jsonl: every entry unless given",
        ),
    ] = None,
    json: JsonOption = False,
    jsonl: Annotated[
        bool,
        typer.Option("--jsonl", help="every matching entry as JSON lines, oldest first (export)"),
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="delete the entries older than [action_log] keep")
    ] = False,
) -> None:
    """What happened to objects and why: every action runs took, skipped or failed (and
    rm, restore, recall, recover), kept for [action_log] keep."""
    from shelflife.service import actionlog

    shelf = state.open()
    if prune:
        removed, _ = actionlog.prune(shelf.context)
        if json:
            print_json({"pruned": removed})
        else:
            note(f"pruned {removed} entries older than [action_log] keep")
        return
    if outcome is not None and outcome not in OUTCOMES:
        raise typer.BadParameter(f"--outcome must be one of {', '.join(OUTCOMES)}")
    if tier is not None and tier not in shelf.config.tiers:
        raise UsageError(
            f"unknown tier {tier!r}", hint=f"known tiers: {', '.join(shelf.config.tiers)}"
        )
    now = utcnow()
    keys: tuple[str, ...] = ()
    if key is not None:
        keys = tuple(actionlog.keys_named(shelf.context, key))
        if not keys:
            raise UsageError(
                f"{key!r} is neither a key nor a value any tier's ref_format spells",
                hint="pass the object's key, or the value a reference column holds",
            )
    chosen = actionlog.LogFilter(
        keys=keys,
        rule=rule,
        run_id=run,
        tier=tier,
        outcome=outcome,
        since=_when(since, now),
        until=_when(until, now),
    )
    if jsonl:
        write = sys.stdout.write
        for item in actionlog.stream(shelf.context, chosen, after=after, limit=limit):
            write(jsonlib.dumps(item.as_json()) + "\n")
        return
    entries = actionlog.find(shelf.context, chosen, after=after, limit=limit or 50, newest=True)
    if json:
        print_json({"entries": [item.as_json() for item in entries]})
        return
    _show(entries, chosen)


def _show(entries: "list[LogEntry]", chosen: "LogFilter") -> None:
    if not entries:
        out.print("no entries" + (" for " + ", ".join(chosen.keys) if chosen.keys else ""))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(caption="newest last; times in UTC; --json or --jsonl for runs and every field")
    for name in ("when", "action", "rule", "where", "key", "outcome", "why"):
        table.add_column(name, no_wrap=name in ("when", "outcome"), overflow="fold")
    for item in entries:
        where = item.tier + (f" → {item.to}" if item.to else "")
        why = item.reason or ""
        if item.detail:
            why += f" [{item.detail}]"
        cells = (
            item.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            item.action if item.bytes is None else f"{item.action} {format_size(item.bytes)}",
            item.rule or item.command,
            where,
            item.key,
            item.outcome,
            why,
        )
        # Text, not markup: keys and reasons may hold brackets
        table.add_row(
            *(Text(cell) for cell in cells),
            style={"failed": "red", "skipped": "yellow"}.get(item.outcome),
        )
    out.print(table)
