"""The ``shelflife`` command. Thin: every command calls the service layer.

Expected failures print ``error: …`` and a hint, never a traceback, and exit with the
DESIGN's codes: 0 done, 1 some actions failed, 2 usage or config error, 3 refused for
safety, 4 another run holds the lock.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from shelflife.cli import collect, commands, lifecycle, serve
from shelflife.cli.render import err
from shelflife.errors import ShelflifeError

# Help is rendered plainly (click's formatter): Typer's Rich help panels import Rich and
# its own renderer, which cost more than the rest of ``shelflife --help`` together.
app = typer.Typer(
    name="shelflife",
    help="Keep file storage healthy: tiers, watermarks, retention and orphan collection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # use a wide terminal, as Rich did
)
commands.register(app)
collect.register(app)
lifecycle.register(app)
serve.register(app)


def _whole_first_paragraphs(group: typer.Typer) -> None:
    """List each command and sub-group under the whole first paragraph of its help: click's
    plain formatter would otherwise cut it to the width left beside the name ("...")."""
    import inspect  # here, after Typer (which needs it too) has loaded it

    from typer.models import DefaultPlaceholder

    def first_paragraph(text: str) -> str:
        return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())

    for command in group.registered_commands:
        doc = command.help or (command.callback.__doc__ if command.callback else None)
        if doc and command.short_help is None:
            command.short_help = first_paragraph(doc)
    for sub in group.registered_groups:
        instance = sub.typer_instance
        if instance is None:
            continue
        info = instance.info
        if isinstance(info.help, str) and isinstance(info.short_help, DefaultPlaceholder):
            info.short_help = first_paragraph(info.help)
        _whole_first_paragraphs(instance)


_whole_first_paragraphs(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    code = run(argv)
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:
    try:
        result: Any = app(args=argv, standalone_mode=False)
    except ShelflifeError as exc:
        report(exc)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.TyperException as exc:  # click's usage errors, vendored by Typer
        show = getattr(exc, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            err.print(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return int(result) if isinstance(result, int) else 0


def report(exc: ShelflifeError) -> None:
    from rich.markup import escape

    from shelflife.base.logs import redact

    err.print(f"[bold red]error:[/] {escape(redact(exc.message))}", markup=True, highlight=False)
    if exc.hint:
        err.print(f"[dim]hint:[/] {escape(redact(exc.hint))}", markup=True, highlight=False)
