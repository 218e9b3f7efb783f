"""HTTP API under load: small uploads and URL resolutions beside ``GET /healthz``.

    .venv/bin/python bench/api.py [--seconds 15] [--connections 32] [--runs 3]

Starts ``shelflife serve`` on a loopback port over a SQLite catalog and a local tier with
200 objects, then drives it with ``wrk`` (Debian package ``wrk``; two threads, Lua scripts
for the multipart bodies) for ``--seconds`` per workload:

- reference: ``GET /healthz`` (the framework, one catalog read, no auth);
- ``GET /api/v1/urls/{key}`` over the 200 keys (auth, key resolution, URL, access time);
- ``POST /api/v1/objects`` of 4 KiB files under fresh keys, ``key`` before ``file``
  (multipart parse, lease, write, two fsyncs, inventory row).

The three workloads run in turn, ``--runs`` times (so a burst of other work on the
machine hits every workload alike). Printed per run and workload: requests/s, p50 / p99
latency, errors (connection errors, timeouts, any status but 2xx), the throughput ratio
to ``/healthz`` in the same run, the server's CPU per request, and the client's CPU (from
``wait4``) as a share of one core: a client near 100 % of a core would be the limit. The
summary gives the median and the range over the runs. Targets: uploads at least 0.5x
``/healthz``, p99 at most 250 ms, 0 errors.

Without ``wrk`` (or with ``--client processes``) the load comes from ``--processes``
Python processes sharing the connections, each an asyncio httpx client.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port  # noqa: E402

from shelflife.api.auth import hash_token, new_token  # noqa: E402

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")
WORKLOADS = ("healthz", "urls", "upload")
PAYLOAD = 4096
BOUNDARY = "----shelflifebench"

# wrk's Lua: `args` are the token and a prefix that keeps keys fresh across runs.
WRK_COMMON = """
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
WRK_SCRIPTS = {
    "healthz": "",
    "urls": """
local n = 0
function init(args)
  headers = {["Authorization"] = "Bearer " .. args[1]}
end
function request()
  n = n + 1
  return wrk.format("GET", string.format("/api/v1/urls/bench/%04d.bin", n % 200), headers)
end
""",
    "upload": f"""
local n = 0
local boundary = "{BOUNDARY}"
local payload = string.rep("x", {PAYLOAD})
function init(args)
  prefix = "load/" .. args[2] .. "/" .. id .. "-"
  headers = {{["Authorization"] = "Bearer " .. args[1],
             ["Content-Type"] = "multipart/form-data; boundary=" .. boundary}}
end
function request()
  n = n + 1
  local body = "--" .. boundary .. "\\r\\n" ..
    'Content-Disposition: form-data; name="key"\\r\\n\\r\\n' .. prefix .. n .. ".bin\\r\\n" ..
    "--" .. boundary .. "\\r\\n" ..
    'Content-Disposition: form-data; name="file"; filename="f.bin"\\r\\n' ..
    "Content-Type: application/octet-stream\\r\\n\\r\\n" .. payload .. "\\r\\n" ..
    "--" .. boundary .. "--\\r\\n"
  return wrk.format("POST", "/api/v1/objects", headers, body)
end
""",
}


@dataclass
class Result:
    kind: str
    requests: int
    seconds: float
    errors: int
    p50: float  # seconds
    p99: float
    server_cpu: float  # seconds of the server's CPU during the workload
    client_cpu: float  # seconds of the client's CPU

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def server_ms_per_request(self) -> float:
        return self.server_cpu / max(self.requests, 1) * 1000

    @property
    def client_share(self) -> float:
        return self.client_cpu / self.seconds


def process_cpu(pid: int) -> float:
    """User and system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str, token: str, kind: str, seconds: float, connections: int, tag: str, scripts: Path
) -> tuple[int, float, int, float, float, float]:
    script = scripts / f"{kind}.lua"
    script.write_text(WRK_COMMON + WRK_SCRIPTS[kind])
    target = url + ("/healthz" if kind == "healthz" else "")
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), target]
    process = subprocess.Popen(
        [*command, "--", token, tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0 or "RESULT" not in out:
        error = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"wrk failed: {out[-1000:]} {error[-1000:]}")
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    count, micros, *errors, p50, p99 = (int(part) for part in line.split()[1:])
    return (
        count,
        micros / 1e6,
        sum(errors),
        p50 / 1e6,
        p99 / 1e6,
        usage.ru_utime + usage.ru_stime,
    )


# -- the fallback client: several Python processes -------------------------------------


async def load(
    url: str, token: str, kind: str, seconds: float, concurrency: int, tag: str
) -> tuple[int, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    payload = b"x" * PAYLOAD

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
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
                        data={"key": f"load/{tag}/{os.getpid()}-{n:08d}.bin"},
                        files={"file": ("f.bin", payload)},
                    )
                ok = response.status_code in (200, 201)
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += 0 if ok else 1

    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return errors, latencies


def run_processes(
    url: str, token: str, kind: str, seconds: float, connections: int, tag: str, processes: int
) -> tuple[int, float, int, float, float, float]:
    share = max(connections // processes, 1)
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", url, token, kind, str(seconds), str(share), tag],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    latencies: list[float] = []
    errors = 0
    cpu = 0.0
    for child in children:
        _, _, usage = os.wait4(child.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        report = json.loads(child.stdout.read() if child.stdout else "{}")
        errors += report["errors"]
        latencies += report["latencies"]
    latencies.sort()
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else 0.0
    return len(latencies), seconds, errors, p50, p99, cpu


def child_main(url: str, token: str, kind: str, seconds: float, share: int, tag: str) -> None:
    errors, latencies = asyncio.run(load(url, token, kind, seconds, share, tag))
    print(json.dumps({"errors": errors, "latencies": latencies}))


# -- the run ---------------------------------------------------------------------------


def start_server(base: Path) -> tuple[subprocess.Popen[bytes], str, str]:
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
    for _ in range(300):
        try:
            httpx.get(url + "/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return server, url, token


def show(result: Result, reference: Result) -> str:
    return (
        f"  {result.kind:<8} {result.rate:6.0f} req/s  p50 {result.p50 * 1000:6.1f} ms  "
        f"p99 {result.p99 * 1000:7.1f} ms  errors {result.errors}  "
        f"{result.rate / reference.rate:4.2f}x /healthz  "
        f"server {result.server_ms_per_request:4.2f} ms CPU/req  "
        f"client {result.client_share * 100:3.0f} % of a core"
    )


def summary(runs: list[dict[str, Result]]) -> None:
    def spread(values: list[float], fmt: str) -> str:
        return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–" + (
            f"{fmt.format(max(values))})"
        )

    print(f"median (range) over {len(runs)} runs:")
    for kind in WORKLOADS:
        results = [run[kind] for run in runs]
        ratios = [run[kind].rate / run["healthz"].rate for run in runs]
        print(
            f"  {kind:<8} {spread([r.rate for r in results], '{:.0f}')} req/s  "
            f"p50 {spread([r.p50 * 1000 for r in results], '{:.0f}')} ms  "
            f"p99 {spread([r.p99 * 1000 for r in results], '{:.0f}')} ms  "
            f"errors {sum(r.errors for r in results)}  "
            f"{spread(ratios, '{:.2f}')}x /healthz  "
            f"server {spread([r.server_ms_per_request for r in results], '{:.2f}')} ms CPU/req  "
            f"client {spread([r.client_share * 100 for r in results], '{:.0f}')} % of a core"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", choices=("wrk", "processes"), default=None)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, token, kind, seconds, share, tag = args.child
        child_main(url, token, kind, float(seconds), int(share), tag)
        return
    client = args.client or ("wrk" if shutil.which("wrk") else "processes")
    print(
        f"shelflife API benchmark — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.seconds:g} s per workload, "
        f"{args.connections} connections, client: "
        + ("wrk, 2 threads" if client == "wrk" else f"{args.processes} httpx processes")
    )
    with tempfile.TemporaryDirectory(prefix="shelflife-bench-api-") as tmp:
        server, url, token = start_server(Path(tmp))
        scripts = Path(tmp) / "lua"
        scripts.mkdir()
        runs: list[dict[str, Result]] = []
        try:
            for number in range(1, args.runs + 1):
                print(f"run {number}:", flush=True)
                results: dict[str, Result] = {}
                for kind in WORKLOADS:
                    tag = f"r{number}"
                    before = process_cpu(server.pid)
                    if client == "wrk":
                        measured = run_wrk(
                            url, token, kind, args.seconds, args.connections, tag, scripts
                        )
                    else:
                        measured = run_processes(
                            url, token, kind, args.seconds, args.connections, tag, args.processes
                        )
                    count, seconds, errors, p50, p99, client_cpu = measured
                    server_cpu = process_cpu(server.pid) - before
                    results[kind] = Result(
                        kind, count, seconds, errors, p50, p99, server_cpu, client_cpu
                    )
                    print(show(results[kind], results["healthz"]), flush=True)
                runs.append(results)
        finally:
            server.terminate()
            server.wait(30)
        summary(runs)


if __name__ == "__main__":
    main()
