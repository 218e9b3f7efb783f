"""A fault-injecting HTTP proxy on loopback, for store and database fault tests.

It stands between a client and a real server (moto's S3 server, Azurite, PostgreSQL) and,
per request, at random:

- ``drop``: closes the client's connection before forwarding anything;
- ``drop-after``: forwards the request (the server acts on it), then closes without an
  answer — the client cannot tell whether its write happened;
- ``500`` / ``503``: answers itself with that status, forwarding nothing (an
  ``InternalError`` / ``ServiceUnavailable``, not a request to slow down);
- ``delay``: waits 50–400 ms, then forwards;
- ``truncate``: forwards, then passes on the answer's head and half of its body and
  closes (a body cut short mid-stream).

HTTP mode reads one request at a time (h11 finds where it ends), asks the server with
``Connection: close`` and answers the client the same way, so every request is a
connection of its own and a fault never spills onto the next request. TCP mode
(``http=False``) only relays bytes both ways and can be cut off as a whole (``down()``):
the database outage tests use it. Every fault is counted in ``counts``.

As a rate-limited store (``limit=R``), it answers ``503 SlowDown`` with a ``Retry-After``
to every request beyond the R-th of each whole second (``window`` seconds), forwarding
nothing, as S3 does past a prefix's request rate. Every request's arrival is recorded in
``arrivals`` (instant, request line, whether it was refused) in both modes.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence

import h11

FAULTS = ("drop", "drop-after", "500", "503", "delay", "truncate")


class FaultProxy:
    """``FaultProxy(upstream_port, rate=0.3).start()`` → listens on ``self.port``."""

    def __init__(
        self,
        upstream_port: int,
        *,
        rate: float = 0.0,
        faults: Sequence[str] = FAULTS,
        http: bool = True,
        seed: int = 0,
        only: bytes | None = None,
        limit: int | None = None,
        window: float = 1.0,
        retry_after: int | None = 1,
    ) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.faults = tuple(faults)
        self.http = http
        self.only = only  # fault only the requests whose request line contains this
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.limit = limit  # requests answered per window; the rest are refused (SlowDown)
        self.window = window
        self.retry_after = retry_after  # the Retry-After sent with SlowDown (None: none)
        self.arrivals: list[tuple[float, bytes, bool]] = []
        self._in_window: Counter[int] = Counter()
        self.requests = 0
        self.port = 0
        self._down = False
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def injected(self) -> int:
        return sum(self.counts.values())

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def down(self) -> None:
        """Cut every open connection and refuse new ones until :meth:`up`."""
        self._down = True

        def cut() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(cut)

    def up(self) -> None:
        self._down = False

    # -- the server ------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 20)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self._down:
                return
            if self.http:
                await self._http(reader, writer)
            else:
                await self._tcp(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, h11.ProtocolError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.add(up_writer)
        try:

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                dst.transport.abort()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if request is None:
            return
        self.requests += 1
        line = request.split(b"\r\n", 1)[0]
        now = time.time()
        if self.limit is not None:
            window = math.floor(now / self.window)
            self._in_window[window] += 1
            if self._in_window[window] > self.limit:
                self.counts["slowdown"] += 1
                self.arrivals.append((now, line, True))
                writer.write(_error_response(503, "SlowDown", retry_after=self.retry_after))
                await writer.drain()
                return
        self.arrivals.append((now, line, False))
        fault = self._choose() if self.only is None or self.only in line else None
        if fault not in (None, "truncate"):
            self.counts[fault] += 1
        if fault == "drop":
            return
        if fault in ("500", "503"):
            writer.write(_error_response(int(fault)))
            await writer.drain()
            return
        if fault == "delay":
            await asyncio.sleep(self.random.uniform(0.05, 0.4))
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            up_writer.write(request)
            await up_writer.drain()
            response = await up_reader.read()  # the server closes: Connection: close
        finally:
            up_writer.transport.abort()
        if fault == "drop-after" or not response:
            return
        if fault == "truncate":
            head, sep, body = response.partition(b"\r\n\r\n")
            if len(body) >= 2:  # an answer without a body has nothing to cut short
                self.counts["truncate"] += 1
                writer.write(head + sep + body[: len(body) // 2])
                await writer.drain()
                return
        writer.write(_closing(response))
        await writer.drain()

    def _choose(self) -> str | None:
        if not self.faults or self.random.random() >= self.rate:
            return None
        return self.random.choice(self.faults)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole request (head and body), rewritten to ask for ``Connection: close``."""
    parser = h11.Connection(h11.SERVER)
    method = target = b""
    headers: list[tuple[bytes, bytes]] = []
    body = bytearray()
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data and not headers and not method:
                return None
            parser.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            method, target = event.method, event.target
            headers = [(k, v) for k, v in event.headers if k not in (b"connection", b"keep-alive")]
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            return None
    # Re-framed with a Content-Length: chunked bodies arrive whole here.
    headers = [(k, v) for k, v in headers if k not in (b"transfer-encoding", b"content-length")]
    if body or method in (b"PUT", b"POST"):
        headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"connection", b"close"))
    head = method + b" " + target + b" HTTP/1.1\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return head + b"\r\n" + bytes(body)


def _closing(response: bytes) -> bytes:
    """The server's answer with its Connection header saying close (it already does)."""
    head, sep, body = response.partition(b"\r\n\r\n")
    lines = [
        line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")
    ] + [b"Connection: close"]
    return b"\r\n".join(lines) + sep + body


def _error_response(
    status: int, code: str | None = None, *, retry_after: int | None = None
) -> bytes:
    reason = {500: b"Internal Server Error", 503: b"Service Unavailable"}[status]
    name = (code or {500: "InternalError", 503: "ServiceUnavailable"}[status]).encode()
    message = b"Please reduce your request rate." if code == "SlowDown" else b"injected fault"
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>' + name + b"</Code>"
        b"<Message>" + message + b"</Message></Error>"
    )
    return (
        b"HTTP/1.1 " + str(status).encode() + b" " + reason + b"\r\n"
        b"Content-Type: application/xml\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + (b"" if retry_after is None else b"Retry-After: %d\r\n" % retry_after)
        + b"Connection: close\r\n\r\n"
        + body
    )
