"""The ``shelflife`` command. Thin: every command calls the service layer.

Expected failures print ``error: …`` and a hint, never a traceback, and exit with the
DESIGN's codes: 0 done, 1 some actions failed, 2 usage or config error, 3 refused for
safety, 4 another run holds the lock. Under ``--json`` the failure is also printed on
stdout as ``{"error": {"code", "message", "hint"}}``, with the HTTP API's codes.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from shelflife.cli import actionlog, collect, commands, lifecycle, notify, serve
from shelflife.cli.render import error_json, print_json, report
from shelflife.errors import (
    CatalogError,
    ConfigError,
    InvalidKeyError,
    LockedError,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    RefusedError,
    ShelflifeError,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
    UsageError,
)

# Help is rendered plainly (click's formatter): Typer's Rich help panels import Rich and
# its own renderer, which cost more than the rest of ``shelflife --help`` together.
app = typer.Typer(
    name="shelflife",
    help="Keep file storage healthy: tiers, watermarks, retention and orphan collection.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # use a wide terminal, as Rich did
)
commands.register(app)
collect.register(app)
lifecycle.register(app)
serve.register(app)
notify.register(app)
actionlog.register(app)


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
    args = sys.argv[1:] if argv is None else list(argv)
    json = wants_json(args)
    try:
        result: Any = app(args=args, standalone_mode=False)
    except ShelflifeError as exc:
        return fail(exc.exit_code, error_code(exc), exc.message, exc.hint, json=json)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return fail(130, "aborted", "aborted", None, json=json)
    except typer.TyperException as exc:  # click's usage errors, vendored by Typer
        # A bare group answers with its help. By name: Typer raises its vendored click's
        # NoArgsIsHelpError (typer._click) where it vendors click, click's own before.
        if type(exc).__name__ == "NoArgsIsHelpError" and not json:
            show = getattr(exc, "show", None)  # click's UsageError.show
            if show is not None:
                show(file=sys.stderr)
            return 2
        return fail(2, "invalid_request", exc.format_message(), _usage_hint(exc), json=json)
    except KeyboardInterrupt:
        return fail(130, "interrupted", "interrupted", None, json=json)
    return int(result) if isinstance(result, int) else 0


def wants_json(args: list[str]) -> bool:
    """Whether the command line asks for ``--json`` (read before parsing, so that a
    command line click refuses is answered in JSON too)."""
    options = args[: args.index("--")] if "--" in args else args
    return "--json" in options


# The HTTP API's codes (shelflife.api.errors), most specific first: one name for one
# failure wherever it is reported.
_CODES: list[tuple[type[ShelflifeError], str]] = [
    (InvalidKeyError, "invalid_key"),
    (ObjectNotFound, "not_found"),
    (ObjectExists, "exists"),
    (ObjectArchived, "archived"),
    (LockedError, "run_in_progress"),
    (RefusedError, "refused"),
    (UsageError, "bad_request"),
    (StoreAuthError, "store_auth"),
    (StoreUnreachable, "store_unreachable"),
    (StoreError, "store_error"),
    (CatalogError, "catalog_unavailable"),
    (ConfigError, "config_error"),
]


def error_code(exc: ShelflifeError) -> str:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return "error"


def fail(exit_code: int, code: str, message: str, hint: str | None, *, json: bool) -> int:
    """Report a failure: ``error: …`` and its hint on stderr; under ``--json`` also
    ``{"error": {"code", "message", "hint"}}`` on stdout. Return the exit code."""
    from shelflife.base.logs import redact

    message = redact(message)
    hint = redact(hint) if hint else None
    if json:
        print_json(error_json(code, message, hint))
    report(message, hint)
    return exit_code


def _usage_hint(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "shelflife"
    return f"run '{path} --help' for its arguments and options"
