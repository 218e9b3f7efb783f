"""A latency-adding TCP proxy on loopback: a fixed delay per HTTP request, nothing else.

    .venv/bin/python bench/latency_proxy.py --delay 40 UPSTREAM_PORT [UPSTREAM_PORT ...]

Real object stores answer each request after tens of milliseconds and serve many requests
at once; a store server on loopback answers in well under a millisecond. This proxy makes
one look like the other: it listens on a free port per upstream port (printed on one line,
in order, once every listener is up), relays bytes both ways, and holds each request back
by ``--delay`` milliseconds before passing it on. Connections are independent, so requests in
parallel are delayed in parallel, as a real endpoint's round trips are.

A request is counted where the client starts sending again after the server has answered
(HTTP/1.1 without pipelining: one request, then its answer, per turn); a request body sent
in several chunks is delayed once. SIGUSR1 prints ``{"requests": n, "connections": c,
"served": s}`` on stdout (``s``: seconds from passing requests on to their answers' first
bytes, summed: the server's own time, queueing included); SIGTERM stops the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable

CHUNK = 256 * 1024


class LatencyProxy:
    """Relays connections to ``127.0.0.1:upstream``, each request ``delay`` seconds late."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self.connections = 0
        self.served = 0.0  # seconds from passing a request on to its answer's first bytes
        self.open: set[asyncio.Task[None]] = set()  # held, so that none is collected midway

    async def serve(self, upstream: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.open.add(task)
            try:
                await self._relay(upstream, reader, writer)
            except asyncio.CancelledError:
                # the proxy stopping: end quietly (Python 3.11's stream server reports a
                # cancelled handler as an unhandled error, one traceback per connection)
                writer.close()
            finally:
                self.open.discard(task)

        return await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)

    async def _relay(
        self, upstream: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_w.close()
            return
        answered = [True]  # the server has answered since the client last sent: a new request
        sent = [0.0]  # when the request was passed on

        async def forward() -> None:
            while data := await client_r.read(CHUNK):
                if answered[0]:
                    answered[0] = False
                    self.requests += 1
                    await asyncio.sleep(self.delay)
                    sent[0] = time.monotonic()
                server_w.write(data)
                await server_w.drain()
            if server_w.can_write_eof():
                server_w.write_eof()

        async def backward() -> None:
            while data := await server_r.read(CHUNK):
                if not answered[0]:
                    self.served += time.monotonic() - sent[0]
                answered[0] = True
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        async def guarded(direction: Callable[[], Awaitable[None]]) -> None:
            try:
                await direction()
            except (ConnectionError, OSError):
                pass
            finally:  # either side gone: both connections go
                for writer in (client_w, server_w):
                    writer.close()

        await asyncio.gather(guarded(forward), guarded(backward))

    def stats(self) -> None:
        figures = {"requests": self.requests, "connections": self.connections}
        print(json.dumps({**figures, "served": self.served}), flush=True)


async def main(delay: float, upstreams: list[int]) -> None:
    proxy = LatencyProxy(delay)
    servers = [await proxy.serve(port) for port in upstreams]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.stats)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(" ".join(str(port) for port in ports), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=40.0, help="milliseconds added per request")
    parser.add_argument("upstreams", type=int, nargs="+", help="ports to relay to")
    options = parser.parse_args()
    if 0 < options.delay < 1:
        parser.error(f"--delay {options.delay}: milliseconds (40 for 40 ms)")
    try:
        asyncio.run(main(options.delay / 1000, options.upstreams))
    except KeyboardInterrupt:
        sys.exit(0)
