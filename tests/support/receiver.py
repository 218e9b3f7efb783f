"""A webhook receiver on a free loopback port: a real HTTP server in a thread that records
every request and answers from a script (``[500, 500]``: fail twice, then 200)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    port: int
    answers: list[int] = field(default_factory=list)  # answered in turn, then 200
    stall: float = 0.0  # seconds to sit on each request before answering
    retry_after: str | None = None
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r.body for r in self.requests if event is None or r.body["event"] == event]

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"{count} requests expected, {len(self.requests)} received")


@contextmanager
def receiver(
    answers: list[int] | None = None, *, stall: float = 0.0, retry_after: str | None = None
) -> Iterator[Receiver]:
    state = Receiver(free_port(), list(answers or []), stall, retry_after)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.requests.append(Received(self.path, dict(self.headers.items()), body))
                code = state.answers.pop(0) if state.answers else 200
            if state.stall:
                time.sleep(state.stall)
            try:
                self.send_response(code)
                if state.retry_after is not None and code in (429, 503):
                    self.send_header("Retry-After", state.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            except OSError:  # the sender gave up waiting
                pass

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
