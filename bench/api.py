"""HTTP API under load: URL resolutions and small uploads from a second process.

    .venv/bin/python bench/api.py [--seconds 30] [--concurrency 32]

Starts ``shelflife serve`` on a loopback port over a SQLite catalog and a local tier with
200 objects, then runs an asyncio client (httpx, one process, ``--concurrency``
connections) for ``--seconds`` per workload:

- reference: ``GET /healthz`` (the framework, one catalog read, no auth);
- ``GET /api/v1/urls/{key}`` over the 200 keys (auth, key resolution, URL, access time);
- ``POST /api/v1/objects`` of 4 KiB files under fresh keys (multipart parse, write,
  fsync, lease, inventory row).

Printed per workload: requests/s, p50 / p99 latency, errors, and the throughput ratio
against the reference. Target: 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port  # noqa: E402

from shelflife.api.auth import hash_token, new_token  # noqa: E402

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")


async def load(
    url: str, token: str, kind: str, seconds: float, concurrency: int
) -> tuple[int, int, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        payload = os.urandom(4096)
        while time.perf_counter() < deadline:
            n = next(counter)
            start = time.perf_counter()
            try:
                if kind == "healthz":
                    response = await client.get("/healthz")
                elif kind == "urls":
                    response = await client.get(f"/api/v1/urls/bench/{n % 200:04d}.bin")
                else:
                    response = await client.post(
                        "/api/v1/objects",
                        files={"file": ("f.bin", payload)},
                        data={"key": f"load/{os.getpid()}-{n:08d}.bin"},
                    )
                ok = response.status_code in (200, 201)
                if not ok and errors < 5:
                    print(f"{kind}: {response.status_code} {response.text[:300]}", file=sys.stderr)
            except httpx.HTTPError as exc:
                ok = False
                if errors < 5:
                    print(f"{kind}: {type(exc).__name__} {exc}", file=sys.stderr)
            latencies.append(time.perf_counter() - start)
            errors += 0 if ok else 1

    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return len(latencies), errors, latencies


def client_main(url: str, token: str, kind: str, seconds: float, concurrency: int) -> None:
    count, errors, latencies = asyncio.run(load(url, token, kind, seconds, concurrency))
    latencies.sort()
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    print(f"{count} {errors} {p50} {p99}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        url, token, kind, seconds, concurrency = args.client
        client_main(url, token, kind, float(seconds), int(concurrency))
        return
    print(
        f"shelflife API benchmark — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.seconds:.0f} s per workload, "
        f"{args.concurrency} connections"
    )
    with tempfile.TemporaryDirectory(prefix="shelflife-bench-api-") as tmp:
        base = Path(tmp)
        token = new_token()
        (base / "outputs" / "bench").mkdir(parents=True)
        for i in range(200):
            (base / "outputs" / "bench" / f"{i:04d}.bin").write_bytes(os.urandom(1024))
        (base / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[tiers.local]
url = "file://outputs"
create = true
[[api.tokens]]
name = "bench"
hash = "{hash_token(token)}"
scopes = ["write"]
""")
        subprocess.run([SHELFLIFE, "scan"], cwd=base, check=True, capture_output=True)
        port = free_port()
        server = subprocess.Popen(
            [SHELFLIFE, "serve", "--port", str(port)],
            cwd=base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    httpx.get(url + "/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            reference = 0.0
            for kind in ("healthz", "urls", "upload"):
                result = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        url,
                        token,
                        kind,
                        str(args.seconds),
                        str(args.concurrency),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    check=True,
                )
                count, errors, p50, p99 = result.stdout.split()
                rate = int(count) / args.seconds
                reference = reference or rate
                print(
                    f"  {kind:<8} {rate:8.0f} req/s  p50 {float(p50) * 1000:6.1f} ms  "
                    f"p99 {float(p99) * 1000:6.1f} ms  errors {errors}  "
                    f"({rate / reference:.2f}x the /healthz reference)",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
