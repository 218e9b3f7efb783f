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
from shelflife.cli.render import (
    RichProgress,
    err,
    note,
    out,
    print_json,
    print_json_whole,
    usage_table,
)
from shelflife.cli.state import ConfigOption, JsonOption, TierOption, state
from shelflife.errors import ShelflifeError, UsageError

if TYPE_CHECKING:
    from shelflife.service.shelf import Shelf


def _show_version(value: bool) -> None:
    if value:
        from shelflife import __version__

        print(f"shelflife {__version__}")
        raise typer.Exit()


def register(app: typer.Typer) -> None:
    @app.callback()
    def _global(
        config: ConfigOption = None,
        verbose: Annotated[
            int,
            typer.Option(
                "--verbose",
                "-v",
                count=True,
                show_default=False,
                help="more log lines: -v info, -vv debug",
            ),
        ] = 0,
        quiet: Annotated[
            int,
            typer.Option(
                "--quiet",
                "-q",
                count=True,
                show_default=False,
                help="less output: -q no progress bars or notes (warnings still), -qq errors only",
            ),
        ] = 0,
        log_level: Annotated[
            str | None,
            typer.Option(
                "--log-level",
                help="debug, info (one line per action), warning (the default), error",
                case_sensitive=False,
            ),
        ] = None,
        log_format: Annotated[
            str, typer.Option("--log-format", help="text or json (one object per line)")
        ] = "text",
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                is_eager=True,
                callback=_show_version,
                help="print the version and exit",
            ),
        ] = False,
    ) -> None:
        if log_format not in ("text", "json"):
            raise UsageError(
                f"--log-format must be text or json, not {log_format!r}",
                hint="run 'shelflife --help' for the global options",
            )
        if verbose and quiet:
            raise UsageError("-v/--verbose and -q/--quiet contradict each other; give one")
        if log_level is not None:
            if verbose or quiet:
                raise UsageError(
                    "--log-level and -v/-q both set the log level; give one",
                    hint="-v is --log-level info, -vv debug, -qq error",
                )
            if log_level.lower() not in ("debug", "info", "warning", "error"):
                raise UsageError(
                    f"--log-level must be debug, info, warning or error, not {log_level!r}",
                    hint="run 'shelflife --help' for the global options",
                )
            level = log_level
        else:
            level = (
                ("info" if verbose == 1 else "debug")
                if verbose
                else ("error" if quiet >= 2 else "warning")
            )
        from shelflife.base.logs import setup

        setup(level, log_format)
        state.config_path = config
        state.shelf = None
        state.quiet = quiet > 0
        state.executor = {}

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
    json: JsonOption = False,
) -> None:
    """Write a commented starter shelflife.toml."""
    from importlib import resources

    if path.exists() and not force:
        raise UsageError(f"{path} exists already", hint="pass --force to overwrite it")
    template = resources.files("shelflife").joinpath("templates/shelflife.toml").read_text()
    path.write_text(template, encoding="utf-8")
    if json:
        print_json({"path": str(path), "written": True})
    elif not state.quiet:
        # A plain line, not Rich: init is the first command a user runs and needs nothing
        # else.
        print(f"wrote {path}; edit it, then run 'shelflife check'", file=sys.stderr)


def check(json: JsonOption = False) -> int:
    """Validate the config; reach and probe every tier and database."""
    from rich.markup import escape

    from shelflife.config import load_config
    from shelflife.service.checks import (
        CheckResult,
        check_database,
        check_environment_references,
        check_rewrites,
        check_schedule,
        check_tier,
        lint_references,
    )
    from shelflife.service.notify import check_targets

    config = load_config(state.config_path)
    results = [CheckResult("config", config.source, True, "valid")]
    try:
        shelf = state.open()
        results.append(
            CheckResult("catalog", "catalog", True, f"schema {shelf.catalog.revision()}")
        )
        results += [check_tier(name, shelf.store) for name in config.tiers]
        results += check_environment_references(shelf.environment_references)
        results += check_rewrites(shelf.config)
    except ShelflifeError as exc:
        results.append(CheckResult("catalog", "catalog", False, exc.message, exc.hint))
    databases = [
        check_database(name, db.url.get_secret_value()) for name, db in config.databases.items()
    ]
    results += databases
    if state.shelf is not None and all(result.ok for result in databases):
        catalog = state.shelf.catalog
        results += lint_references(
            state.shelf.config,
            state.shelf.databases,
            state.shelf.locator,
            lambda location: catalog.get(location.tier, location.key) is not None,
        )
    if state.shelf is not None:
        results.append(check_schedule(state.shelf.context))
    results += check_targets(config)
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
        print_json(
            {
                "key": stored.key,
                "tier": stored.tier,
                "bytes": stored.size,
                "checksum": stored.checksum,
                "ref": stored.ref,
            }
        )
    else:
        out.print(
            f"stored {stored.key} on {stored.tier} ({format_size(stored.size)}): {stored.ref}"
        )


def get(
    key: Annotated[str, typer.Argument(help="a key or a row's value")],
    dest: Annotated[
        str | None,
        typer.Argument(
            help="a file, a folder to put it in (a trailing / creates it), or - for stdout "
            "(default: .)"
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Download an object to a file, into a folder, or to stdout (-)."""
    shelf = state.open()
    if dest == "-":
        if json:
            raise UsageError(
                "--json and - both want stdout", hint="give a file or folder with --json"
            )
        shelf.download(key, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    target = shelf.download(key, dest or ".")
    if json:
        print_json({"key": key, "path": str(target), "bytes": target.stat().st_size})
    else:
        note(f"wrote {target}")


def url(
    key: Annotated[str, typer.Argument(help="a key or a row's value")], json: JsonOption = False
) -> None:
    """Print a URL for an object (presigned on object stores)."""
    shelf = state.open()
    if json:
        location = shelf.resolve(key)
        print_json({"key": location.key, "tier": location.tier, "url": shelf.url(key)})
    else:
        out.print(shelf.url(key), markup=False)


def rm(
    key: Annotated[str, typer.Argument(help="a key or a row's value")],
    force: Annotated[
        bool, typer.Option("--force", help="delete it even if database rows point at it")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Delete an object from every tier holding it; one already gone is not an error.

    An object rows still point at is refused (exit 3) unless --force."""
    copies = state.open().delete_copies(key, missing_ok=True, force=force)
    if not copies:
        if json:
            print_json({"key": key, "deleted": False})
        else:
            note(f"{key} is already gone")
        return
    tiers = [copy.tier for copy in copies]
    if json:
        print_json({"key": copies[0].key, "tier": tiers[0], "deleted": True, "tiers": tiers})
    else:
        note(f"deleted {copies[0].key} from {', '.join(tiers)}")


def ls(
    prefix: Annotated[
        str, typer.Argument(help="only keys starting with this (docs/2024/rep matches report.pdf)")
    ] = "",
    tier: TierOption = None,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="with sizes and modification times")
    ] = False,
    show_all: Annotated[
        bool,
        typer.Option("--all", "-a", help="also shelflife's own folders (.shelflife-trash/ …)"),
    ] = False,
    json: JsonOption = False,
) -> None:
    """List objects as the stores hold them now, in key order."""
    rows = state.open().ls(prefix, tier=tier, internal=show_all)
    if json:
        print_json_whole(
            {},
            {
                "objects": (
                    {
                        "key": info.key,
                        "tier": name,
                        "bytes": info.size,
                        "modified": info.modified.isoformat(),
                        "etag": info.etag,
                    }
                    for name, info in rows
                )
            },
        )
        return
    write = sys.stdout.write
    for name, info in rows:
        if long:
            size = format_size(info.size)
            write(f"{name:<10} {size:>10} {info.modified:%Y-%m-%d %H:%M} {info.key}\n")
        else:
            write(f"{name:<10} {info.key}\n")


def stats(
    json: JsonOption = False,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="scan every tier and re-read the references first (slower)"),
    ] = False,
) -> None:
    """Usage per tier against its watermarks, and health (stored for /metrics)."""
    from shelflife.base.units import utcnow
    from shelflife.service.notify import save_stats

    shelf = state.open()
    if refresh:
        progress = RichProgress(enabled=not json)
        shelf.scan(progress=progress)
        shelf.refresh_references(progress)
    usage = shelf.usage()
    health = shelf.health(usage)
    body = shelf.stats(usage)
    save_stats(shelf.context, body, utcnow())  # and health-changed, if it did
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
