"""Start-up benchmark: how long ``shelflife`` takes before it does anything.

    .venv/bin/python bench/startup.py [--runs N] [--top K]

Runs ``shelflife --help``, ``shelflife init --help``, ``shelflife init`` (in a fresh
temporary folder each time) and ``shelflife stats --help`` N times each, interleaved with
the reference ``rclone help`` (a Go binary: nothing to import) and two floors,
``python -c pass`` (any Python command) and ``python -c 'import typer'`` (any Typer
command), so that load from other work on the machine falls on every case alike. Wall
time and CPU (user + system) come from ``wait4`` on each child. Prints the median, the
spread (min–max) and each case's ratio to ``rclone help``.

Then a ``python -X importtime`` summary of ``shelflife --help`` (the modules with the
largest cumulative import time), and the import contract: none of the heavy modules a
command loads when it runs (SQLAlchemy, FastAPI/Starlette, obstore, Celery, boto3, Azure,
prometheus_client, croniter, Alembic, the config models, the service layer) may be in
``sys.modules`` after ``--help``, ``<command> --help`` or ``init``. A breach prints a
``FAIL`` line and the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.startup import CONTRACT, loaded_modules, offending  # noqa: E402

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")
TARGET_SECONDS = 0.2  # issue 17: `shelflife --help` at most this, wall


@dataclass
class Case:
    name: str
    command: list[str]
    fresh_dir: bool = False  # run in a new empty folder (``init`` writes a file)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)


def environment() -> dict[str, str]:
    """The user's environment without shelflife's or the old services' settings, and with
    bytecode caches on (as after ``pip install``, which compiles them): with
    ``PYTHONDONTWRITEBYTECODE`` set, an editable install recompiles shelflife's modules
    on every start, which is not what a user's machine does."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE_", "SHELFLIFE_")) and k != "PYTHONDONTWRITEBYTECODE"
    }


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` (CPU: user + system of the child)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(cases: list[Case], runs: int, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="shelflife-startup-") as scratch:
        root = Path(scratch)
        for case in cases:  # one untimed run each: page cache and .pyc files warm
            timed(case.command, Path(tempfile.mkdtemp(dir=root)), env)
        for _ in range(runs):
            for case in cases:
                cwd = Path(tempfile.mkdtemp(dir=root)) if case.fresh_dir else root
                wall, cpu = timed(case.command, cwd, env)
                case.walls.append(wall)
                case.cpus.append(cpu)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} ({min(values):.3f}–{max(values):.3f})"


def report(cases: list[Case], reference: Case | None) -> None:
    print(
        f"{'command':<26} {'wall s, median (min–max)':>26} {'CPU s, median (min–max)':>25}  ratio"
    )
    for case in cases:
        ratio = ""
        if reference is not None and case is not reference:
            wall = statistics.median(case.walls) / statistics.median(reference.walls)
            cpu = statistics.median(case.cpus) / statistics.median(reference.cpus)
            ratio = f"{wall:5.1f}x wall, {cpu:5.1f}x CPU"
        print(f"{case.name:<26} {summary(case.walls):>26} {summary(case.cpus):>25}  {ratio}")
    if reference is not None:
        print(f"(ratios: median over median to {reference.name!r})")


def import_times(env: dict[str, str]) -> list[tuple[int, int, str]]:
    """``python -X importtime`` of ``shelflife --help``: (self µs, cumulative µs, name)
    for every module, the name indented by its nesting as Python prints it."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", SHELFLIFE, "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[int, int, str]] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|", 2)
        rows.append((int(own), int(cumulative), name.rstrip()))
    return rows


NAMED = ("shelflife", "typer", "rich", "pydantic", "pydantic_core")


def owners(rows: list[tuple[int, int, str]]) -> dict[str, int]:
    """Self time charged to whoever caused it: each module's own time goes to its
    nearest importer (or itself) among :data:`NAMED`, so the standard library Typer
    pulls in counts as Typer's; what no named package imported is the interpreter's."""
    # importtime prints a module after everything it imported, indented by depth.
    stack: list[tuple[int, str, list[tuple[int, str]]]] = []  # (depth, name, [(own, name)])
    charged: dict[str, int] = {}
    for own, _, raw in rows:
        depth = (len(raw) - len(raw.lstrip()) - 1) // 2
        name = raw.strip()
        inner: list[tuple[int, str]] = [(own, name)]
        while stack and stack[-1][0] > depth:
            inner += stack.pop()[2]
        package = name.split(".")[0]
        if package in NAMED:  # this module and everything under it not yet charged
            for cost, _ in inner:
                charged[package] = charged.get(package, 0) + cost
            inner = []
        stack.append((depth, name, inner))
    for _, _, rest in stack:
        for cost, _ in rest:
            charged["interpreter"] = charged.get("interpreter", 0) + cost
    return charged


def print_import_times(rows: list[tuple[int, int, str]], top: int) -> None:
    total = sum(own for own, _, _ in rows)
    print(f"python -X importtime shelflife --help: {total / 1e6:.3f} s in imports")
    shares = sorted(owners(rows).items(), key=lambda item: item[1], reverse=True)
    print(
        "  by who imported it: "
        + ", ".join(f"{name} {own / 1000:.1f} ms ({own / total:.0%})" for name, own in shares)
    )
    print(f"  top {top} by cumulative time:")
    print(f"  {'cumulative ms':>13} {'self ms':>8}  module")
    for own, cumulative, name in sorted(rows, key=lambda row: row[1], reverse=True)[:top]:
        print(f"  {cumulative / 1000:>13.1f} {own / 1000:>8.1f}  {name}")


def contract(env: dict[str, str]) -> list[str]:
    """One failure line per command that loads a module it has no use for."""
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="shelflife-startup-") as scratch:
        for argv, banned in CONTRACT:
            found = offending(
                loaded_modules(argv, Path(tempfile.mkdtemp(dir=scratch)), env), banned
            )
            label = "shelflife " + " ".join(argv)
            if found:
                roots = sorted(
                    {name.split(".")[0] if "shelflife" not in name else name for name in found}
                )
                failures.append(f"FAIL {label}: imports {', '.join(roots[:12])}")
            else:
                print(f"ok   {label}: none of the heavy modules is imported")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--top", type=int, default=15, help="modules in the importtime summary")
    args = parser.parse_args()
    env = environment()

    print(
        f"start-up: {args.runs} interleaved runs each; {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    helps = Case("shelflife --help", [SHELFLIFE, "--help"])
    cases = [
        helps,
        Case("shelflife init --help", [SHELFLIFE, "init", "--help"]),
        Case("shelflife init", [SHELFLIFE, "init"], fresh_dir=True),
        Case("shelflife stats --help", [SHELFLIFE, "stats", "--help"]),
        Case("python -c pass", [sys.executable, "-c", "pass"]),
        # what any Typer CLI pays before its own code runs
        Case("python -c 'import typer'", [sys.executable, "-c", "import typer"]),
    ]
    rclone = shutil.which("rclone")
    reference = Case("rclone help", [rclone, "help"]) if rclone else None
    if reference is None:
        print("rclone not found (apt-get install -y rclone): no reference ratio")
    else:
        cases.insert(0, reference)
    measure(cases, args.runs, env)
    report(cases, reference)
    median = statistics.median(helps.walls)
    verdict = "meets" if median <= TARGET_SECONDS else "misses"
    print(f"shelflife --help: {median:.3f} s median wall, {verdict} the {TARGET_SECONDS} s target")

    print()
    print_import_times(import_times(env), args.top)

    print()
    failures = contract(env)
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
