"""``shelflife serve``: the HTTP API, /metrics and health, through uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from shelflife.cli.render import err
from shelflife.cli.state import state

HostOption = Annotated[str, typer.Option("--host", help="address to listen on")]
PortOption = Annotated[int, typer.Option("--port", "-p", help="port to listen on", min=1)]


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(host: HostOption = "127.0.0.1", port: PortOption = 8080) -> None:
    """Serve /metrics (Prometheus), /metrics/storage (health) and /healthz."""
    import uvicorn

    from shelflife.api import create_app

    shelf = state.open()
    err.print(f"serving on http://{host}:{port} (metrics at /metrics, health at /metrics/storage)")
    uvicorn.run(create_app(shelf), host=host, port=port, log_config=None, access_log=False)
