"""The commands for configuration, inventory and objects.

The service layer is imported inside each command (see :mod:`shelflife.cli.state`).
"""

# No ``from __future__ import annotations`` here: Typer reads each command's signature
# (twice) when it builds the command line, and string annotations would be compiled and
# evaluated anew every time, on every start.

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shelflife.base.units import format_size
from shelflife.cli.render import RichProgress, err, out, print_json, usage_table
from shelflife.cli.state import ConfigOption, JsonOption, TierOption, state
from shelflife.errors import ShelflifeError, UsageError

if TYPE_CHECKING:
    from shelflife.service.checks import CheckResult
    from shelflife.service.shelf import Shelf


def register(app: typer.Typer) -> None:
    @app.callback()
    def _global(
        config: ConfigOption = None,
        log_level: Annotated[
            str,
            typer.Option(
                "--log-level",
                help="debug, info (one line per action), warning, error",
                case_sensitive=False,
            ),
        ] = "warning",
        log_format: Annotated[
            str, typer.Option("--log-format", help="text or json (one object per line)")
        ] = "text",
    ) -> None:
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format must be text or json, not {log_format!r}")
        if log_level.lower() not in ("debug", "info", "warning", "error"):
            raise UsageError(
                f"--log-level must be debug, info, warning or error, not {log_level!r}"
            )
        from shelflife.base.logs import setup

        setup(log_level, log_format)
        state.config_path = config
        state.shelf = None

    app.command()(init)
    app.command()(check)
    app.command()(scan)
    app.command()(put)
    app.command()(get)
    app.command()(url)
    app.command("rm")(rm)
    app.command()(ls)
    app.command()(stats)
    app.command()(demo)


def init(
    path: Annotated[Path, typer.Argument(help="where to write the file")] = Path("shelflife.toml"),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter shelflife.toml."""
    from importlib import resources

    if path.exists() and not force:
        raise UsageError(f"{path} exists already", hint="pass --force to overwrite it")
    template = resources.files("shelflife").joinpath("templates/shelflife.toml").read_text()
    path.write_text(template, encoding="utf-8")
    # A plain line, not Rich: init is the first command a user runs and needs nothing else.
    print(f"wrote {path}; edit it, then run 'shelflife check'", file=sys.stderr)


def check(json: JsonOption = False) -> int:
    """Validate the config; reach and probe every tier and database."""
    from rich.markup import escape

    from shelflife.config import load_config
    from shelflife.service.checks import (
        CheckResult,
        check_database,
        check_rewrites,
        check_tier,
        lint_references,
    )

    config = load_config(state.config_path)
    results = [CheckResult("config", config.source, True, "valid")]
    try:
        shelf = state.open()
        results.append(
            CheckResult("catalog", "catalog", True, f"schema {shelf.catalog.revision()}")
        )
        results += [check_tier(name, shelf.store) for name in config.tiers]
        results += check_rewrites(config)
    except ShelflifeError as exc:
        results.append(CheckResult("catalog", "catalog", False, exc.message, exc.hint))
    databases = [
        check_database(name, db.url.get_secret_value()) for name, db in config.databases.items()
    ]
    results += databases
    if state.shelf is not None and all(result.ok for result in databases):
        catalog = state.shelf.catalog
        results += lint_references(
            config,
            state.shelf.databases,
            state.shelf.locator,
            lambda location: catalog.get(location.tier, location.key) is not None,
        )
    if state.shelf is not None:
        results.append(_schedule_check(state.shelf))
    failed = [result for result in results if not result.ok]
    if json:
        print_json({"ok": not failed, "checks": [result.as_json() for result in results]})
    else:
        for result in results:
            mark = (
                ("[yellow]warn[/]" if result.warning else "[green]ok[/]")
                if result.ok
                else ("[bold red]FAIL[/]")
            )
            subject = escape(f"{result.component} {result.name}: {result.message}")
            out.print(f"{mark:>20} {subject}")
            if result.hint and (result.warning or not result.ok):
                hint = escape(result.hint).replace("\n", "\n" + " " * 15)
                out.print(f"{'':>9}[dim]hint: {hint}[/]")
    return 2 if failed else 0


def scan(tier: TierOption = None, json: JsonOption = False) -> None:
    """Bring the inventory up to date with the stores, and snapshot the references."""
    shelf = state.open()
    progress = RichProgress(enabled=not json)
    results = shelf.scan([tier] if tier else None, progress=progress)
    references = shelf.refresh_references(progress) if shelf.config.references else None
    if json:
        figures = {
            r.tier: {
                "objects": r.objects,
                "bytes": r.bytes,
                "removed": r.removed,
                "seconds": round(r.seconds, 3),
            }
            for r in results
        }
        data: dict[str, object] = {"tiers": figures}
        if references is not None:
            data["references"] = {
                "rows": references.rows,
                "unmatched": references.unmatched,
                "unmatched_examples": references.examples,
            }
        print_json(data)
        return
    for r in results:
        out.print(
            f"{r.tier}: {r.objects:,} objects, {format_size(r.bytes)}"
            f" ({r.removed:,} gone since the last scan) in {r.seconds:.1f}s"
        )
    if references is not None:
        out.print(
            f"references: {references.rows:,} rows read, "
            f"{references.unmatched:,} match no tier's spelling"
        )
        for example in references.examples:
            out.print(f"  unmatched: {example}", markup=False)


def put(
    file: Annotated[Path, typer.Argument(help="the file to store", exists=True, dir_okay=False)],
    key: Annotated[str | None, typer.Argument(help="its key (default: the file name)")] = None,
    tier: TierOption = None,
    json: JsonOption = False,
) -> None:
    """Store a file; print the value a row should hold."""
    stored = state.open().put(file, key, tier=tier)
    if json:
        print_json(stored.as_json())
    else:
        out.print(
            f"stored {stored.key} on {stored.tier} ({format_size(stored.size)}): {stored.ref}"
        )


def get(
    key: Annotated[str, typer.Argument(help="a key or a row's value")],
    dest: Annotated[Path | None, typer.Argument(help="file or folder (default: .)")] = None,
) -> None:
    """Download an object to a file."""
    target = state.open().download(key, dest or Path("."))
    err.print(f"wrote {target}")


def url(key: Annotated[str, typer.Argument(help="a key or a row's value")]) -> None:
    """Print a URL for an object (presigned on object stores)."""
    out.print(state.open().url(key), markup=False)


def rm(key: Annotated[str, typer.Argument(help="a key or a row's value")]) -> None:
    """Delete an object."""
    location = state.open().delete(key)
    err.print(f"deleted {location.key} from {location.tier}")


def ls(
    prefix: Annotated[str, typer.Argument(help="only keys under this prefix")] = "",
    tier: TierOption = None,
    json: JsonOption = False,
) -> None:
    """List objects as the stores hold them now."""
    rows = state.open().ls(prefix, tier=tier)
    if json:
        print_json(
            [
                {
                    "tier": name,
                    "key": info.key,
                    "size": info.size,
                    "modified": info.modified.isoformat(),
                }
                for name, info in rows
            ]
        )
        return
    for name, info in rows:
        out.print(
            f"{name:<10} {info.size:>12,} {info.modified:%Y-%m-%d %H:%M} {info.key}", markup=False
        )


def _schedule_check(shelf: "Shelf") -> "CheckResult":
    """Is it running? The last successful lifecycle run and the next one due."""
    from shelflife.service.checks import CheckResult

    status = shelf.schedule_status()
    if status["next_due"] is None:
        return CheckResult("schedule", "lifecycle", True, status["message"], warning=True)
    last = status["last_success"] or "never"
    message = f"last successful run {last}; next due {status['next_due']}"
    if status["overdue"]:
        return CheckResult(
            "schedule",
            "lifecycle",
            True,
            f"{status['message']} ({message})",
            hint="start 'shelflife daemon', or Celery beat with a worker",
            warning=True,
        )
    return CheckResult("schedule", "lifecycle", True, message)


def stats(
    json: JsonOption = False,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="scan every tier and re-read the references first (slower)"),
    ] = False,
) -> None:
    """Usage per tier against its watermarks, and health (stored for /metrics)."""
    from shelflife.base.units import utcnow
    from shelflife.catalog.history import History

    shelf = state.open()
    if refresh:
        progress = RichProgress(enabled=not json)
        shelf.scan(progress=progress)
        shelf.refresh_references(progress)
    usage = shelf.usage()
    health = shelf.health(usage)
    body = shelf.stats(usage)
    History(shelf.catalog.engine).save_stats(body, utcnow())
    if json:
        print_json(body)
        return
    out.print(usage_table(usage))
    color = {"healthy": "green", "warning": "yellow", "critical": "red"}[health.status]
    out.print(f"health: [bold {color}]{health.status}[/]")
    for reason in health.reasons:
        out.print(f"  - {reason}", markup=False)


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where to build it")] = Path("demo"),
) -> None:
    """Build a sample application and run shelflife against it."""
    from shelflife.service.demo import build_demo
    from shelflife.service.shelf import Shelf

    built = build_demo(directory)
    err.print(
        f"built a sample application in {directory}/: {built.rows} rows in app.db pointing at "
        f"files on the local tier, {built.orphans} files no row points at"
    )
    shelf = Shelf.from_config(built.config_path)
    state.shelf = shelf
    progress = RichProgress()
    for result in shelf.scan(progress=progress):
        out.print(f"scanned {result.tier}: {result.objects} objects, {format_size(result.bytes)}")
    shelf.refresh_references(progress)
    _show_stats(shelf, "before")

    from shelflife.cli.lifecycle import show_plan, show_run

    out.print("\n[bold]the plan[/] (shelflife plan): what the rules call for now")
    plan = shelf.plan(progress=progress)
    show_plan(plan)
    out.print("\n[bold]applying it[/] (shelflife apply): each action re-checked first")
    outcome = shelf.apply(plan, trigger="demo", progress=progress)
    show_run(outcome)
    out.print(
        "every row still points at its file's bytes: moved files' rows were rewritten, "
        "expired files' rows set to NULL, orphans kept in quarantine for 7 days"
    )
    shelf.scan(progress=progress)
    shelf.refresh_references(progress)
    _show_stats(shelf, "after")
    out.print(f"\nconfig: {built.config_path}  (try: shelflife -c {built.config_path} stats)")


def _show_stats(shelf: "Shelf", when: str) -> None:
    usage = shelf.usage()
    table = usage_table(usage)
    table.title = f"Storage by tier ({when})"
    out.print(table)
    health = shelf.health(usage)
    out.print(f"health: {health.status}" + "".join(f"\n  - {r}" for r in health.reasons))
