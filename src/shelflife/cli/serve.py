"""``shelflife serve``: the HTTP API, /metrics and health, through uvicorn."""

# No ``from __future__ import annotations`` here: Typer reads each command's signature
# (twice) when it builds the command line, and string annotations would be compiled and
# evaluated anew every time, on every start.

from typing import Annotated

import typer

from shelflife.base.extras import needs
from shelflife.cli.render import err, print_json
from shelflife.cli.state import JsonOption, state

HostOption = Annotated[str, typer.Option("--host", help="address to listen on")]
PortOption = Annotated[int, typer.Option("--port", "-p", help="port to listen on", min=1)]


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(daemon)
    app.command()(schedule)
    app.add_typer(token_app, name="token")


def serve(host: HostOption = "127.0.0.1", port: PortOption = 8080) -> None:
    """Serve the HTTP API (/api/v1, OpenAPI at /docs), the dashboard, /metrics."""
    with needs("shelflife serve"):
        import uvicorn

        from shelflife.api import create_app

    shelf = state.open()
    err.print(f"serving on http://{host}:{port} (metrics at /metrics, health at /metrics/storage)")
    uvicorn.run(create_app(shelf), host=host, port=port, log_config=None, access_log=False)


def daemon(host: HostOption = "127.0.0.1", port: PortOption = 8080) -> None:
    """Run the [schedule] entries (lifecycle, stats) and serve the HTTP API and /metrics."""
    import threading

    with needs("shelflife daemon"):
        import uvicorn

        from shelflife.api import create_app
    from shelflife.workers.scheduler import Scheduler, ScheduleState, shelf_jobs

    shelf = state.open()
    scheduler = Scheduler(
        shelf.config.schedule, ScheduleState(shelf.catalog.engine), shelf_jobs(shelf)
    )
    stop = threading.Event()
    worker = threading.Thread(target=scheduler.loop, args=(stop,), name="scheduler", daemon=True)
    worker.start()
    upcoming = scheduler.next_due()
    err.print(
        f"scheduler running ({', '.join(scheduler.entries) or 'no entries'}"
        + (f"; next at {upcoming:%Y-%m-%d %H:%M:%S} UTC" if upcoming else "")
        + f"); serving on http://{host}:{port}"
    )
    try:
        uvicorn.run(create_app(shelf), host=host, port=port, log_config=None, access_log=False)
    finally:
        stop.set()
        worker.join(timeout=30)


def schedule(
    count: Annotated[int, typer.Option("--count", "-n", help="firings per entry", min=1)] = 3,
    json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The next firing times of each [schedule] entry, and whether runs are on time."""
    import itertools

    from shelflife.base.units import utcnow
    from shelflife.cli.render import out, print_json
    from shelflife.config import load_config
    from shelflife.service.schedule import entries, fire_times

    config = load_config(state.config_path)
    now = utcnow()
    zone = config.schedule.timezone
    upcoming = {
        name: [t.isoformat() for t in itertools.islice(fire_times(expr, zone, now), count)]
        for name, expr in entries(config.schedule).items()
    }
    status = state.open().schedule_status(now)
    if json:
        print_json({"timezone": zone, "next": upcoming, "status": status})
        return
    from datetime import datetime
    from zoneinfo import ZoneInfo

    for name, times in upcoming.items():
        out.print(f"{name} ({dict(entries(config.schedule))[name]}, {zone}):", markup=False)
        for stamp in times:
            moment = datetime.fromisoformat(stamp)
            local = moment.astimezone(ZoneInfo(zone))
            out.print(f"  {local:%Y-%m-%d %H:%M:%S %Z}  ({moment:%Y-%m-%d %H:%M:%S} UTC)")
    if not upcoming:
        out.print("no schedule entries are set")
    last = status["last_success"] or "never"
    out.print(f"last successful lifecycle run: {last}")
    if status["overdue"]:
        err.print(f"warning: {status['message']}", markup=False)


token_app = typer.Typer(
    help="API bearer tokens (only their hashes are kept).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the main app's
)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="who or what will use it")],
    scopes: Annotated[str, typer.Option("--scopes", help="read, write, admin")] = "read",
    json: JsonOption = False,
) -> None:
    """Create a token: printed once, only its hash is stored (in the catalog)."""
    from shelflife.api.auth import hash_token, parse_scopes, store_token
    from shelflife.base.units import utcnow

    chosen = parse_scopes(scopes)
    shelf = state.open()
    token = store_token(shelf.catalog.engine, name, chosen, utcnow())
    if json:
        print_json(
            {"name": name, "scopes": list(chosen), "token": token, "hash": hash_token(token)}
        )
        return
    print(token)
    err.print(
        f"token {name!r} ({', '.join(chosen)}) created; it is shown only now. Its hash is in "
        "the catalog; to declare it in shelflife.toml instead:\n"
        f'[[api.tokens]]\nname = "{name}"\nhash = "{hash_token(token)}"\n'
        f"scopes = {list(chosen)!r}".replace("'", '"'),
        markup=False,
    )


@token_app.command("list")
def token_list(json: JsonOption = False) -> None:
    """Token names and scopes (never the tokens)."""
    from shelflife.api.auth import Tokens

    shelf = state.open()
    known = [
        (name, sorted(scopes))
        for name, _, scopes in Tokens(shelf.config, shelf.catalog.engine).known()
    ]
    if json:
        print_json({"tokens": [{"name": name, "scopes": scopes} for name, scopes in known]})
        return
    for name, scopes in known:
        print(f"{name}\t{','.join(scopes)}")


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="the token's name")], json: JsonOption = False
) -> None:
    """Delete a token stored in the catalog."""
    from sqlalchemy import delete

    from shelflife.catalog.schema import api_tokens
    from shelflife.errors import UsageError

    shelf = state.open()
    with shelf.catalog.engine.begin() as conn:
        gone = conn.execute(delete(api_tokens).where(api_tokens.c.name == name)).rowcount
    if not gone:
        raise UsageError(
            f"no token named {name!r} in the catalog",
            hint="tokens under [[api.tokens]] are removed from shelflife.toml",
        )
    ttl = shelf.config.api.token_cache_ttl.total_seconds()
    if json:
        print_json({"name": name, "revoked": True, "token_cache_ttl_seconds": ttl})
        return
    if ttl > 0:
        err.print(
            f"token {name!r} revoked; a running server refuses it within its "
            f"[api] token_cache_ttl ({ttl:g} s in this configuration)",
            markup=False,
        )
    else:
        err.print(f"token {name!r} revoked")
