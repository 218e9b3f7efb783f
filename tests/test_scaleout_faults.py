"""Fanned-out runs (Celery workers, a PostgreSQL catalog) through the loss of whole processes
and servers mid-run: a worker's whole process group killed, the broker restarted (Redis,
RabbitMQ), the catalog's PostgreSQL restarted.

Each fault strikes when the catalog's ``run_actions`` ledger shows some but not all of the
run's actions done, and the test checks that it did. The run must end — complete, or stop
partial with its reason — and then every row resolves to the bytes it had, no row points at
nothing, and the next run completes with the journal settled.

What is restarted is private to the test: a ``redis-server`` without persistence, a
RabbitMQ node with its own name, ports, epmd and cookie, a PostgreSQL cluster, each in a
folder of its own. The machine's Redis (databases 13–15) brokers or keeps results for the
rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.celery_site import CELERY, Env, build, check_invariants, end_state
from tests.support.cli import SHELFLIFE
from tests.support.figures import Figures
from tests.support.servers import free_port, wait_for_port

pytestmark = pytest.mark.postgres
REDIS = "redis://127.0.0.1:6379"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
STALLED = "no worker recorded progress"  # the dispatcher's reason when batches were lost
# Each batch (one action) waits this long once it is recorded pending, so a run of about
# fifty batches on two workers lasts several seconds: a fault that takes a second or two
# to strike (a broker's stop_app under load) still strikes mid-run.
BATCH_DELAY = "batch-pending:0.25"


# -- the application, its workers and its run -----------------------------------------------


def application(base: Path, catalog: str, broker: str, results: str, **celery: str) -> Env:
    """tests/test_celery.py's application, one action per batch (a run of many batches)."""
    env = build(base, catalog, celery=f"{broker} {results}")
    settings = "".join(f"{name} = {value}\n" for name, value in celery.items())
    body = env.config.read_text().replace("batch_size = 4", "batch_size = 1")
    env.config.write_text(body + settings)  # [celery] is the file's last table
    return env


def clean_environment(env: Env) -> dict[str, str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
    }
    environment["SHELFLIFE_CONFIG"] = str(env.config)
    return environment


def shelflife_json(env: Env, *args: str) -> tuple[int, dict[str, object], str]:
    result = subprocess.run(
        [SHELFLIFE, "-c", str(env.config), *args, "--json"],
        cwd=env.base,
        env=clean_environment(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    body: dict[str, object] = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, body, result.stderr


class Workers:
    """``celery worker`` processes, each the leader of its own process group."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = self.env.base / f"worker{len(self.processes)}.log"
        process = subprocess.Popen(
            [CELERY, "-A", "shelflife.celery", "worker", "-Q", f"b-{self.env.base.name}",
             "-c", str(concurrency), "-n", f"w{len(self.processes)}-{uuid.uuid4().hex[:6]}@%h",
             "--loglevel", "info", "--without-heartbeat", "--without-gossip",
             "--without-mingle"],
            cwd=self.env.base,
            env={**clean_environment(self.env), "SHELFLIFE_DELAY_AT": BATCH_DELAY},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)
        self.logs.append(log)
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("a worker did not start: " + log.read_text()[-2000:])
            time.sleep(0.2)
        return process

    def tasks(self, number: int) -> list[str]:
        """The ids of the batches worker ``number`` received, in order."""
        marker = "Task shelflife.execute_batch["
        return [
            line.split(marker, 1)[1].split("]", 1)[0]
            for line in self.logs[number].read_text().splitlines()
            if marker in line and line.endswith("received")
        ]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


@pytest.fixture
def workers() -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for each in started:
        each.stop()


def group(pgid: int) -> list[int]:
    """The processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


class Run:
    """``shelflife run --json`` in the background, and the ledger of the catalog."""

    def __init__(self, env: Env, catalog: str) -> None:
        self.catalog = create_engine(catalog, poolclass=NullPool)
        self.out = env.base / "run.json"
        self.err = env.base / "run.err"
        self.process = subprocess.Popen(
            [SHELFLIFE, "-c", str(env.config), "run", "--json"],
            cwd=env.base,
            env=clean_environment(env),
            stdout=self.out.open("w"),
            stderr=self.err.open("w"),
        )

    def ledger(self) -> dict[str, int]:
        """Outcome → how many of the run's actions ``run_actions`` holds with it."""
        try:
            with self.catalog.connect() as conn:
                rows = conn.execute(
                    text("SELECT outcome, count(*) FROM run_actions GROUP BY outcome")
                )
                return {str(outcome): int(count) for outcome, count in rows.all()}
        except Exception:  # the catalog is away, or its tables not made yet
            return {}

    def started(self, timeout: float = 60) -> None:
        """Wait until the ledger shows an action done and one being taken."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            seen = self.ledger()
            if seen.get("done") and seen.get("pending"):
                return
            time.sleep(0.02)
        raise AssertionError("the run took no action: " + self.err.read_text()[-2000:])

    def result(self, timeout: float = 90) -> tuple[int, dict[str, object]]:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the run did not end within {timeout} s") from None
        finally:
            self.catalog.dispose()
        stderr = self.err.read_text()
        assert "Traceback" not in stderr, stderr
        body: dict[str, object] = json.loads(self.out.read_text())
        return code, body


def mid_run(run: Run, total: int) -> int:
    """After a fault struck: assert the run had begun and not finished; actions done."""
    done = run.ledger().get("done", 0)
    assert 0 < done < total, f"the fault did not strike mid-run: {done} of {total} done"
    return done


def planned(env: Env) -> int:
    """How many actions a run would take now."""
    code, body, stderr = shelflife_json(env, "plan")
    assert code == 0, stderr
    actions = body["actions"]
    assert isinstance(actions, list)
    return len(actions)


def ended(code: int, body: dict[str, object]) -> bool:
    """The faulted run ended as it may: complete, or partial with the reason; stopped?"""
    if body["status"] == "ok":
        assert code == 0, body
        return False
    assert body["status"] == "partial", body
    assert code == 1, body
    return True


def census(env: Env) -> tuple[int, int]:
    """(lost, dangling): rows whose location holds other bytes, and rows pointing at nothing."""
    state = end_state(env)
    files, rows = state["files"], state["rows"]
    assert isinstance(files, dict)
    assert isinstance(rows, list)
    lost = dangling = 0
    for value in rows:
        if value is None:
            continue  # expired (on_expire = "null")
        tier, key = ("cold", value[5:]) if value.startswith("cold/") else ("outputs", value[9:])
        found = files.get(f"{tier}/{key}")
        dangling += found is None
        lost += found is not None and found != env.originals[key]
    return lost, dangling


def unsettled(catalog: str) -> int:
    """Journal entries neither done, undone nor failed."""
    engine = create_engine(catalog, poolclass=NullPool)
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM journal WHERE step NOT IN ('done', 'undone', 'failed')")
        ).scalar()
    engine.dispose()
    return int(count or 0)


def finish(env: Env, catalog: str) -> tuple[int, int]:
    """The next run completes and leaves nothing behind: (lost, dangling), both 0."""
    lost, dangling = census(env)
    assert (lost, dangling) == (0, 0)  # already after the faulted run
    code, body, stderr = shelflife_json(env, "run")
    assert body["status"] == "ok", (body, stderr[-2000:])
    assert code == 0
    assert unsettled(catalog) == 0
    check_invariants(env)
    assert not list((env.base / "outputs").rglob("*.bin"))  # every action taken
    rows = [row for row in end_state(env)["rows"] if row]  # type: ignore[union-attr]
    assert len(list((env.base / "cold").rglob("*.bin"))) == len(rows)  # no stray copies
    assert planned(env) == 0
    return census(env)


def flush(url: str) -> None:
    address, _, db = url.removeprefix("redis://").partition("/")
    host, _, port = address.partition(":")
    command = ["redis-cli", "-h", host, "-p", port, "-n", db or "0", "flushdb"]
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def pg_catalog(pg_catalog_url: str) -> str:
    return pg_catalog_url.replace("postgresql://", "postgresql+psycopg://")


# -- 1. a worker's whole process group killed ------------------------------------------------


@pytest.mark.invariant("I1", "I2")
def test_a_workers_whole_process_group_killed(
    tmp_path: Path, pg_catalog: str, workers: list[Workers], figures: Figures
) -> None:
    """The only worker — a prefork main process and its two children — killed at once with
    SIGKILL to its process group: the run waits; a replacement worker started afterwards
    gets the batches the dead one held (Redis delivers them again after visibility_timeout)
    and the run completes."""
    broker = f"{REDIS}/13"
    flush(broker)
    env = application(
        tmp_path / "faults-group", pg_catalog, broker, broker, visibility_timeout='"6s"', wave="2"
    )
    total = planned(env)
    pool = Workers(env)
    workers.append(pool)
    first = pool.start(concurrency=2)
    members = group(first.pid)
    assert len(members) == 3, members  # the main process and its two children
    run = Run(env, pg_catalog)
    run.started()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    deadline = time.monotonic() + 10
    while group(first.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group(first.pid) == []  # the whole group is gone
    mid_run(run, total)
    held = pool.tasks(0)[-2:]  # what the dead worker was taking (a wave is 2 batches)
    assert run.process.poll() is None  # the run waits for its batches
    pool.start(concurrency=2)
    code, body = run.result()
    assert not ended(code, body), body  # the batches were delivered again and taken
    assert set(held) & set(pool.tasks(1)), "no batch of the dead worker was taken again"
    keys = [action["key"] for action in body["actions"]]  # type: ignore[union-attr,index]
    assert len(keys) == len(set(keys)) == total  # each action once
    lost, dangling = finish(env, pg_catalog)
    figures.add(
        "scale-out: worker process group killed",
        kills=len(members),
        actions=total,
        lost=lost,
        dangling=dangling,
    )


# -- 2. the broker restarted -----------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` without persistence: a restart loses everything it held."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.base)],
            stdout=(self.base / "redis.log").open("a"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port, self.process, "redis-server")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


@pytest.mark.invariant("I1", "I2")
def test_redis_broker_restarted(
    tmp_path: Path,
    pg_catalog: str,
    workers: list[Workers],
    redis_server: RedisServer,
    figures: Figures,
) -> None:
    """The broker and result backend, a Redis without persistence, SIGKILLed mid-run and
    started again on its port: the batches it held and the results it kept are gone. The
    coordinator keeps waiting through the outage, by the ledger once the results cannot
    come, and stops partial when the ledger shows no progress; the next run does the rest."""
    env = application(
        tmp_path / "faults-redis",
        pg_catalog,
        redis_server.url,
        redis_server.url,
        visibility_timeout='"4s"',
        wave="4",
    )
    total = planned(env)
    pool = Workers(env)
    workers.append(pool)
    pool.start()
    pool.start()
    run = Run(env, pg_catalog)
    run.started()
    redis_server.kill()
    mid_run(run, total)
    time.sleep(1)
    redis_server.start()
    code, body = run.result()
    stopped = ended(code, body)
    if stopped:
        assert STALLED in str(body.get("stopped") or body.get("error") or body), body
    lost, dangling = finish(env, pg_catalog)
    figures.add(
        "scale-out: broker restarted (Redis)",
        restarts=1,
        actions=total,
        stopped=int(stopped),
        lost=lost,
        dangling=dangling,
    )


class RabbitNode:
    """A private RabbitMQ node: its own name, ports, epmd, cookie and data folder."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port, dist, epmd = free_port(), free_port(), free_port()
        (base / "home").mkdir(parents=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (base / "env.conf").write_text("")  # not the machine's rabbitmq-env.conf
        (base / "enabled_plugins").write_text("[].\n")  # no management listener
        cookie = base / "home" / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        self.environment = {
            **os.environ,
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": f"faults{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "ERL_EPMD_PORT": str(epmd),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
        }
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(base)], check=True)
        cookie.chmod(0o400)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n",
             self.environment["RABBITMQ_NODENAME"], *args],
            env=self.environment, check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", str(RABBIT_BIN / "rabbitmq-server")],
            env=self.environment,
            stdout=(self.base / "server.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.ctl("await_startup", "--timeout", "5")
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    log = (self.base / "server.log").read_text()[-2000:]
                    raise AssertionError("RabbitMQ did not start: " + log) from None
                time.sleep(0.5)

    def stop(self) -> None:
        try:
            self.ctl("shutdown")
        finally:  # the node's own epmd, on its own port
            subprocess.run(["epmd", "-kill"], env=self.environment, capture_output=True)


@pytest.fixture
def rabbit_node() -> Iterator[RabbitNode]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.skip("RabbitMQ is not installed")
    base = Path(tempfile.mkdtemp(prefix="faults-rabbit-"))  # the rabbitmq user reads it
    node = RabbitNode(base)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.invariant("I1", "I2")
def test_rabbitmq_broker_restarted(
    tmp_path: Path,
    pg_catalog: str,
    workers: list[Workers],
    rabbit_node: RabbitNode,
    figures: Figures,
) -> None:
    """The broker, RabbitMQ, stopped mid-run (``stop_app``: every client disconnected) and
    started again: batches in flight are ended on their workers and delivered again, the
    coordinator waits through the outage, the run completes."""
    results = f"{REDIS}/14"
    flush(results)
    env = application(
        tmp_path / "faults-rabbit",
        pg_catalog,
        rabbit_node.url,
        results,
        visibility_timeout='"6s"',
        wave="2",
    )
    total = planned(env)
    pool = Workers(env)
    workers.append(pool)
    pool.start()
    pool.start()
    run = Run(env, pg_catalog)
    run.started()
    rabbit_node.ctl("stop_app")
    mid_run(run, total)
    time.sleep(1)
    rabbit_node.ctl("start_app")
    code, body = run.result()
    stopped = ended(code, body)
    assert not stopped, body  # RabbitMQ kept the batches
    keys = [action["key"] for action in body["actions"]]  # type: ignore[union-attr,index]
    assert len(keys) == len(set(keys)) == total  # each action once
    lost, dangling = finish(env, pg_catalog)
    figures.add(
        "scale-out: broker restarted (RabbitMQ)",
        restarts=1,
        actions=total,
        stopped=int(stopped),
        lost=lost,
        dangling=dangling,
    )


# -- 3. the catalog's PostgreSQL restarted ---------------------------------------------------


class PostgresCluster:
    """A private PostgreSQL cluster (initdb as the postgres user, in a folder of its own)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.data = base / "data"
        subprocess.run(["chown", "postgres", str(base)], check=True)
        self.pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-o",
                options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.pg("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="faults-pg-"))  # the postgres user reads it
    cluster = PostgresCluster(base)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.invariant("I1", "I2")
def test_the_catalogs_postgresql_restarted(
    tmp_path: Path, workers: list[Workers], pg_cluster: PostgresCluster, figures: Figures
) -> None:
    """The catalog's PostgreSQL stopped (fast shutdown: every session ended) mid-run and
    started again: the workers' batches and the coordinator meet a catalog that is away.
    The run ends, complete or partial with its reason; the next run recovers and
    completes."""
    broker = f"{REDIS}/15"
    flush(broker)
    env = application(
        tmp_path / "faults-pg",
        pg_cluster.url,
        broker,
        broker,
        visibility_timeout='"6s"',
        wave="2",
    )
    total = planned(env)
    pool = Workers(env)
    workers.append(pool)
    pool.start()
    pool.start()
    run = Run(env, pg_cluster.url)
    run.started()
    pg_cluster.stop("fast")
    time.sleep(1)
    pg_cluster.start()
    mid_run(run, total)
    code, body = run.result()
    stopped = ended(code, body)
    lost, dangling = finish(env, pg_cluster.url)
    figures.add(
        "scale-out: catalog restarted (PostgreSQL)",
        restarts=1,
        actions=total,
        stopped=int(stopped),
        lost=lost,
        dangling=dangling,
    )
