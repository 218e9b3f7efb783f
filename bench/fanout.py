"""Fan-out: one migration run taken in process, then by 1, 2 and 4 Celery worker processes.

    .venv/bin/python bench/fanout.py [--count 400] [--repeat 3] [--quick] [--delay 40]

The stores are latency-bound, as real object stores are: two moto S3 servers (one per
tier, so neither server's GIL is shared by both tiers) behind ``bench/latency_proxy.py``,
which holds every request back by ``--delay`` milliseconds (40). Each worker takes one
batch at a time with ``--transfers`` transfers in flight, so a single worker waits on round
trips and more workers can only help by running batches side by side: the figure is the
fan-out's, not the test server's.

Workload, reset before each case: ``--count`` objects of ``--size`` bytes in a fresh bucket
of tier ``hot``, one row per object in an application database in PostgreSQL, a fresh
PostgreSQL catalog, a rule migrating everything to tier ``cold``. The coordinator
(``Shelf.run`` in a process of its own, the same call ``shelflife run`` makes) is timed as a
whole and for its dispatch phase (the executor handing batches out and waiting for them);
each worker's batch times come from its log. After each case the run is checked: every
object in ``cold`` with its bytes, none left in ``hot``, every row pointing at ``cold``.

Printed per case (median, and the spread over ``--repeat`` rounds): the dispatch phase
and the whole run, objects/s, the speed-up over 1 worker and over the in-process run of
the same round (the reference), the coordinator's overhead per batch (dispatch phase minus
the workers' busy time per worker, per batch), and the CPU share of the store (both moto
processes and the proxy) and of the whole machine, which show whether the store or the
cores were the limit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

CELERY = str(Path(sys.executable).parent / "celery")
PG = os.environ.get("SHELFLIFE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CATALOG_DB = "shelflife_bench_fanout"
APP_DB = "shelflife_bench_fanout_app"
REDIS_DB = 12
BATCH_QUEUE = "fanout-bench-batches"
# a batch's line in a worker's log: its time, and how many actions it had (0: a warm-up)
SUCCEEDED = re.compile(
    r"Task shelflife\.execute_batch\[[0-9a-f-]+\] succeeded in ([0-9.e-]+)s: (\d+)"
)


@dataclass
class Result:
    """One case of one round."""

    case: str
    workers: int
    run_wall: float  # Shelf.run in the coordinator
    window: float  # the coordinator's process, start to exit: what the CPU figures cover
    dispatch: float  # the dispatch phase
    batches: int
    busy: float  # the workers' batch time, summed (the dispatch phase when in process)
    coordinator_cpu: float
    worker_cpu: float
    store_cpu: float  # both moto processes and the proxy
    proxy_cpu: float  # the proxy's part of it
    machine_busy: float  # cores busy, all processes (of os.cpu_count())
    pressure: float | None  # share of the run some task was waiting for a core (PSI)
    requests: int
    served: float  # the servers' time answering them, summed
    objects: int
    spread: list[int]  # batches per worker

    @property
    def workers_busy(self) -> float:
        """The workers' batch time over the time they had (dispatch phase x workers)."""
        return self.busy / (max(1, self.workers) * self.dispatch)

    @property
    def overhead_per_batch(self) -> float:
        """Dispatch time not spent in a worker's batch, per batch (the coordinator's share:
        sending, waiting for the wave, reading the results)."""
        if not self.workers:
            return 0.0
        return (self.dispatch - self.busy / self.workers) / self.batches


@dataclass
class Servers:
    motos: list[subprocess.Popen[bytes]]
    direct: list[str]  # the moto endpoints, for setting up and checking
    proxy: subprocess.Popen[str]
    proxied: list[str]  # the same servers behind the proxy, for shelflife

    @property
    def processes(self) -> list[subprocess.Popen[Any]]:
        return [*self.motos, self.proxy]

    def requests(self) -> tuple[int, float]:
        """Requests through the proxy so far, and the servers' time answering them."""
        assert self.proxy.stdout is not None
        self.proxy.send_signal(signal.SIGUSR1)
        figures = json.loads(self.proxy.stdout.readline())
        return int(figures["requests"]), float(figures["served"])


# -- the coordinator, in a process of its own ---------------------------------------------------


def coordinate(config_path: str) -> None:
    """``Shelf.run`` with the dispatcher ``[executor]`` names, its dispatch phase timed."""
    from shelflife.config import load_config
    from shelflife.engine.executor import Batch, ErrorBudget, Executor
    from shelflife.service.dispatch import dispatcher_for
    from shelflife.service.shelf import Shelf

    config = load_config(config_path)
    inner = dispatcher_for(config)
    timing: dict[str, float] = {"dispatch": 0.0, "batches": 0}

    class Timed:
        def dispatch(
            self, executor: Executor, batches: Iterable[Batch], budget: ErrorBudget
        ) -> None:
            def counted() -> Iterator[Batch]:
                for batch in batches:
                    timing["batches"] += 1
                    yield batch

            start = time.perf_counter()
            inner.dispatch(executor, counted(), budget)
            timing["dispatch"] += time.perf_counter() - start

    shelf = Shelf(config, dispatcher=Timed())
    start = time.perf_counter()
    outcome = shelf.run(trigger="python")
    wall = time.perf_counter() - start
    usage = os.times()
    print(
        json.dumps(
            {
                "wall": wall,
                **timing,
                "status": outcome.status,
                "moved": len(outcome.actions),
                "failed": [f.error for f in outcome.failed[:5]],
                "skipped": len(outcome.skipped),
                "cpu": usage.user + usage.system,
            }
        )
    )


def open_catalog(config_path: str) -> None:
    """Create the catalog's tables, before several workers would race to."""
    from shelflife.config import load_config
    from shelflife.service.shelf import Shelf

    Shelf(load_config(config_path)).context.catalog.engine.dispose()


# -- servers, workload, workers -----------------------------------------------------------------


def start_servers(delay_ms: float) -> Servers:
    from bench.transfer import start_moto

    motos, direct = [], []
    for _ in range(2):
        process, endpoint = start_moto()
        motos.append(process)
        direct.append(endpoint)
    proxy = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "latency_proxy.py"), "--delay", str(delay_ms)]
        + [endpoint.rsplit(":", 1)[1] for endpoint in direct],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proxy.stdout is not None
    ports = proxy.stdout.readline().split()
    return Servers(motos, direct, proxy, [f"http://127.0.0.1:{port}" for port in ports])


def s3(endpoint: str) -> Any:
    from tests.support.servers import s3_client

    return s3_client(endpoint)


def fresh_database(name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG.rsplit("/", 1)[0] + "/" + name


def drop_databases() -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in (CATALOG_DB, APP_DB):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Workload:
    base: Path
    config: Path
    hot: str
    cold: str
    app: str
    digests: dict[str, str]  # key → SHA-256 of its bytes


def prepare(base: Path, servers: Servers, options: argparse.Namespace, backend: str) -> Workload:
    """Fresh buckets, catalog and application rows: ``options.count`` objects to migrate."""
    from sqlalchemy import create_engine, text

    base.mkdir(parents=True)
    hot, cold = (f"fanout-{tier}-{uuid.uuid4().hex[:8]}" for tier in ("hot", "cold"))
    s3(servers.direct[0]).create_bucket(Bucket=hot)
    s3(servers.direct[1]).create_bucket(Bucket=cold)
    keys = [f"renders/{i // 100:02d}/frame {i:05d}.bin" for i in range(options.count)]
    payloads = {key: os.urandom(options.size) for key in keys}
    client = s3(servers.direct[0])
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=hot, Key=k, Body=payloads[k]), keys))
    catalog = fresh_database(CATALOG_DB)
    app = fresh_database(APP_DB)
    engine = create_engine(app)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id SERIAL PRIMARY KEY, path TEXT)"))
        conn.execute(text("CREATE INDEX ix_jobs_path ON jobs (path)"))
        conn.execute(
            text("INSERT INTO jobs (path) VALUES (:p)"), [{"p": f"s3://{hot}/{k}"} for k in keys]
        )
    engine.dispose()
    tier = 'region = "us-east-1"\naccess_key = "testing"\nsecret_key = "testing"'
    config = base / "shelflife.toml"
    config.write_text(f"""
[catalog]
url = "{catalog}"
[databases.app]
url = "{app}"
[tiers.hot]
url = "s3://{hot}"
endpoint = "{servers.proxied[0]}"
{tier}
ref_format = "s3://{hot}/{{key}}"
[tiers.cold]
url = "s3://{cold}"
endpoint = "{servers.proxied[1]}"
{tier}
ref_format = "s3://{cold}/{{key}}"
[[references]]
database = "app"
table = "jobs"
column = "path"
[[rules]]
id = "cold"
tier = "hot"
action = "migrate"
to = "cold"
after = "1s"
[executor]
backend = "{backend}"
batch_size = {options.batch_size}
concurrency = {options.transfers}
[celery]
broker_url = "redis://127.0.0.1:6379/{REDIS_DB}"
result_backend = "redis://127.0.0.1:6379/{REDIS_DB}"
queue = "fanout-bench-runs"
batch_queue = "{BATCH_QUEUE}"
wave = {options.wave}
""")
    subprocess.run(
        [sys.executable, __file__, "--open", str(config)],
        cwd=base,
        env=child_env(config),
        check=True,
    )
    digests = {key: hashlib.sha256(data).hexdigest() for key, data in payloads.items()}
    return Workload(base, config, hot, cold, app, digests)


def verify(work: Workload, servers: Servers, body: dict[str, Any]) -> None:
    """The run did the whole job: every object moved with its bytes, every row rewritten."""
    from sqlalchemy import create_engine, text

    problems = []
    if body["status"] != "ok" or body["failed"] or body["moved"] != len(work.digests):
        problems.append(f"run: {body}")
    hot = s3(servers.direct[0]).list_objects_v2(Bucket=work.hot).get("KeyCount", 0)
    if hot:
        problems.append(f"{hot} objects left in hot")
    client = s3(servers.direct[1])

    def digest(key: str) -> str:
        return hashlib.sha256(
            client.get_object(Bucket=work.cold, Key=key)["Body"].read()
        ).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        found = dict(zip(work.digests, pool.map(digest, work.digests), strict=True))
    if found != work.digests:
        problems.append("cold does not hold every object's bytes")
    engine = create_engine(work.app)
    with engine.connect() as conn:
        rows = sorted(r[0] for r in conn.execute(text("SELECT path FROM jobs")))
    engine.dispose()
    if rows != sorted(f"s3://{work.cold}/{key}" for key in work.digests):
        problems.append("rows do not all point at cold")
    if problems:
        raise SystemExit("the run did not do the work: " + "; ".join(problems))


def child_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    env["SHELFLIFE_CONFIG"] = str(config)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_workers(work: Workload, count: int) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    processes, logs = [], []
    for number in range(count):
        log = work.base / f"worker{number}.log"
        processes.append(
            subprocess.Popen(
                [CELERY, "-A", "shelflife.celery", "worker", "-Q", BATCH_QUEUE, "-c", "1",
                 "-n", f"fanout{number}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "info",
                 "--without-heartbeat", "--without-gossip", "--without-mingle"],
                cwd=work.base,
                env=child_env(work.config),
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
        logs.append(log)
    deadline = time.monotonic() + 120
    while not all("ready." in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            stop_workers(processes)
            raise SystemExit("workers did not start: " + logs[0].read_text()[-2000:])
        time.sleep(0.2)
    warm_up(work, logs)
    return processes, logs


def warm_up(work: Workload, logs: list[Path]) -> None:
    """Every worker opens its shelf (catalog, stores) on its first batch: send empty batches
    until each has taken one, so that no worker pays that inside the timed run."""
    from celery import Celery

    from shelflife.service.dispatch import EXECUTE_BATCH

    app = Celery("fanout-bench")
    redis = f"redis://127.0.0.1:6379/{REDIS_DB}"
    app.conf.update(broker_url=redis, result_backend=redis, task_serializer="json")
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    for _ in range(20):
        results = [
            app.send_task(EXECUTE_BATCH, args=("warm-up", now, []), queue=BATCH_QUEUE)
            for _ in range(2 * len(logs))
        ]
        for result in results:
            result.get(timeout=60)
        if all(SUCCEEDED.search(log.read_text()) for log in logs):
            app.close()
            return
    raise SystemExit("a worker took no batch while warming up")


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def cpu_of(processes: Iterable[Any]) -> float:
    import psutil

    total = 0.0
    for handle in processes:
        try:
            family = [handle, *handle.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in family:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, elapsed CPU seconds of all its cores)."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return total - idle, total


def cpu_pressure() -> float | None:
    """Seconds tasks have waited for a core, on some core, since boot (Linux PSI)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1]) / 1e6


def one_case(base: Path, servers: Servers, options: argparse.Namespace, workers: int) -> Result:
    import psutil

    work = prepare(base, servers, options, "celery" if workers else "local")
    subprocess.run(["redis-cli", "-n", str(REDIS_DB), "flushdb"], check=True, capture_output=True)
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    if workers:
        processes, logs = start_workers(work, workers)
    time.sleep(max(0.0, 2.0 - (time.time() - work.config.stat().st_mtime)))  # after = "1s"
    offsets = [log.stat().st_size for log in logs]
    handles = [psutil.Process(p.pid) for p in processes]
    store = [psutil.Process(p.pid) for p in servers.processes]
    before_requests = servers.requests()
    before = (cpu_of(store), cpu_of(handles), machine_busy(), cpu_of(store[-1:]))
    waited = cpu_pressure()
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--coordinate", str(work.config)],
            cwd=base,
            env=child_env(work.config),
            capture_output=True,
            text=True,
        )
        window = time.perf_counter() - started
        store_cpu = cpu_of(store) - before[0]
        proxy_cpu = cpu_of(store[-1:]) - before[3]
        worker_cpu = cpu_of(handles) - before[1]
        now_busy, now_elapsed = machine_busy()
        busy, elapsed = now_busy - before[2][0], now_elapsed - before[2][1]
        after_requests = servers.requests()
        waited_after = cpu_pressure()
    finally:
        stop_workers(processes)
    if done.returncode != 0:
        raise SystemExit(f"the coordinator failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    body = json.loads(done.stdout.strip().splitlines()[-1])
    verify(work, servers, body)
    batch_time = 0.0
    taken = []
    for log, offset in zip(logs, offsets, strict=True):
        with log.open() as stream:
            stream.seek(offset)
            times = [float(t) for t, n in SUCCEEDED.findall(stream.read()) if n != "0"]
        batch_time += sum(times)
        taken.append(len(times))
    cores = os.cpu_count() or 1
    return Result(
        case=f"{workers} worker{'s' if workers > 1 else ''}" if workers else "in process",
        workers=workers,
        run_wall=body["wall"],
        window=window,
        dispatch=body["dispatch"],
        batches=int(body["batches"]),
        busy=batch_time if workers else body["dispatch"],
        coordinator_cpu=body["cpu"],
        worker_cpu=worker_cpu,
        store_cpu=store_cpu,
        proxy_cpu=proxy_cpu,
        machine_busy=busy / elapsed * cores if elapsed else 0.0,
        pressure=None
        if waited is None or waited_after is None
        else (waited_after - waited) / window,
        requests=after_requests[0] - before_requests[0],
        served=after_requests[1] - before_requests[1],
        objects=body["moved"],
        spread=taken,
    )


# -- the report ---------------------------------------------------------------------------------


def spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    middle = statistics.median(values)
    text = f"{middle:.{digits}f}{unit}"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}–{max(values):.{digits}f})"
    return text


def median_or_none(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def format_share(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def describe(result: Result) -> str:
    """One case's figures on a line, as it is measured."""
    return (
        f"{result.case:<11}: dispatch {result.dispatch:6.2f} s, run {result.run_wall:6.2f} s, "
        f"{result.batches} batches, overhead {result.overhead_per_batch * 1000:4.0f} ms/batch, "
        f"batch {result.busy / result.batches * 1000:4.0f} ms, per worker "
        f"{result.spread or '-'}; store {result.served / result.requests * 1000:4.1f} ms/request, "
        f"CPU {result.store_cpu / result.window:4.0%} (proxy "
        f"{result.proxy_cpu / result.window:.0%}); machine {result.machine_busy:.2f} cores, "
        f"waiting for a core {format_share(result.pressure)}"
    )


def report(rounds: list[dict[int, Result]], options: argparse.Namespace) -> None:
    cases = list(rounds[0])
    per_object = statistics.median(r[c].requests / r[c].objects for r in rounds for c in cases)
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f} at the end; "
        f"{options.count} x {options.size} B, batches of {options.batch_size}, wave "
        f"{options.wave}, {options.transfers} transfers per worker, +{options.delay:g} "
        f"ms per request; median (min–max) of {len(rounds)} round(s)"
    )
    header = (
        f"{'case':<11} {'dispatch':>19} {'run':>19} {'objects/s':>17} {'vs 1 worker':>17} "
        f"{'vs in process':>17} {'overhead/batch':>18} {'busy':>5} {'batch':>7} {'store':>8} "
        f"{'store CPU':>9} {'machine':>7} {'wait':>5}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        results = [r[case] for r in rounds]
        first = results[0]
        one = [r[1].dispatch / r[case].dispatch for r in rounds if 1 in r]
        local = [r[0].dispatch / r[case].dispatch for r in rounds if 0 in r]
        print(
            f"{first.case:<11} {spread([r.dispatch for r in results], ' s'):>19} "
            f"{spread([r.run_wall for r in results], ' s'):>19} "
            f"{spread([r.objects / r.dispatch for r in results], '', 0):>17} "
            f"{spread(one, 'x') if one else '':>17} {spread(local, 'x') if local else '':>17} "
            f"{spread([r.overhead_per_batch * 1000 for r in results], ' ms', 0):>18} "
            f"{statistics.median(r.workers_busy for r in results):>5.0%} "
            f"{statistics.median(r.busy / r.batches for r in results) * 1000:>5.0f}ms "
            f"{statistics.median(r.served / r.requests for r in results) * 1000:>6.1f}ms "
            f"{statistics.median(r.store_cpu / r.window for r in results):>9.0%} "
            f"{statistics.median(r.machine_busy for r in results):>6.2f}c "
            f"{format_share(median_or_none([r.pressure for r in results])):>5}"
        )
    print(
        "dispatch: handing out the batches and waiting for them (the fan-out); run: Shelf.run "
        "(recover, scan, plan, dispatch, record).\noverhead/batch: dispatch time minus the "
        "workers' batch time per worker, per batch; busy: the workers' batch time over "
        "dispatch x workers;\nbatch: a batch's mean time on a worker."
        "\nstore: its mean answer time per request, after the proxy's delay; store CPU: both "
        "moto servers and the proxy, share of one core while the coordinator ran;\nmachine: "
        "cores busy (of "
        f"{os.cpu_count()}), every process; wait: share of the run some task waited for a "
        "core (/proc/pressure/cpu).\n"
        f"requests per object: {per_object:.1f}; "
        "workers' CPU per case (median): "
        + ", ".join(
            f"{rounds[0][c].case} {statistics.median(r[c].worker_cpu for r in rounds):.1f} s"
            for c in cases
            if c
        )
        + "; coordinator CPU: "
        + ", ".join(
            f"{statistics.median(r[c].coordinator_cpu for r in rounds):.1f} s" for c in cases
        )
    )


def milliseconds(text: str) -> float:
    """``--delay``: milliseconds, a fraction of one refused (it reads as seconds: 0.04 for
    40 ms would make a benchmark of 40 µs round trips)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not 1 <= value <= 10_000 and value != 0:
        raise argparse.ArgumentTypeError(
            f"{text} ms: --delay is in milliseconds, from 1 to 10000 (40 for 40 ms), or 0"
        )
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="objects to migrate")
    parser.add_argument("--size", type=int, default=4096, help="bytes per object")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--wave", type=int, default=16, help="[celery] wave")
    parser.add_argument("--transfers", type=int, default=2, help="[executor] concurrency")
    parser.add_argument(
        "--delay", type=milliseconds, default=40.0, help="milliseconds added per request"
    )
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median printed)")
    parser.add_argument("--quick", action="store_true", help="120 objects, one round")
    parser.add_argument("--coordinate", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--open", metavar="CONFIG", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.coordinate:
        coordinate(options.coordinate)
        return
    if options.open:
        open_catalog(options.open)
        return
    if options.quick:
        options.count, options.repeat = 120, 1
    counts = [0, *(int(n) for n in options.workers.split(","))]
    if 1 not in counts:
        parser.error("--workers must include 1 (the speed-ups are over 1 worker)")
    if options.wave < 2 * max(counts):
        print(f"note: wave {options.wave} < 2 x {max(counts)} workers: the wave limits fan-out")
    servers = start_servers(options.delay)
    rounds: list[dict[int, Result]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="shelflife-bench-fanout-") as tmp:
            for number in range(options.repeat):
                results = {}
                for workers in counts:
                    result = one_case(Path(tmp) / f"{number}-{workers}", servers, options, workers)
                    results[workers] = result
                    print(f"round {number + 1} {describe(result)}", flush=True)
                rounds.append(results)
    finally:
        for process in servers.processes:
            process.terminate()
            process.wait(20)
        drop_databases()
    report(rounds, options)


if __name__ == "__main__":
    main()
