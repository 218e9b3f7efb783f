"""Write docs/reliability.md from the figures the test run recorded.

The tests that inject faults, race, fuzz or feed bad input record what they tried in
.artifacts/reliability.json (see tests/conftest.py), together with the outcome of every
test marked with the DESIGN section 4 invariant it proves. This script turns that file
into the report, so every figure in it comes from a run anyone can repeat:

    bash scripts/test.sh            # runs the suite, then this script
    python scripts/reliability.py   # again, from the last run's figures

The "Soak" section comes from the long soak (``scripts/soak.py``, 30 minutes, run apart
from the suite): its figures in .artifacts/soak.json when that run was a full one, else
the copy committed in docs/soak.json (``soak.py --record`` writes it).
``python scripts/reliability.py --soak`` rewrites that section alone, keeping the rest.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / ".artifacts" / "reliability.json"
TARGET = ROOT / "docs" / "reliability.md"
AUDIT = ROOT / ".artifacts" / "audit.json"
SOAK_RUN = ROOT / ".artifacts" / "soak.json"
SOAK_RECORD = ROOT / "docs" / "soak.json"
SOAK_MINUTES = 30  # a soak at least this long is the one the report shows

INVARIANTS = {
    "I1": "Nothing referenced is lost",
    "I2": "Migration protocol: copy → verify → repoint → delete, journaled, recoverable",
    "I3": "Orphans are collected only when provably orphaned; refusals delete nothing",
    "I4": "A dry run changes nothing that matters",
    "I5": "One run at a time per catalog",
    "I6": "Deletion can be undone for a while (quarantine, restore)",
    "I7": "Bad input gets a clear error and changes nothing",
    "I8": "A rule means one thing: every command selects, skips and caps alike",
    "I9": "Ages survive moves; a failed verification leaves no copy behind",
}

WHAT_IT_PROVES = {
    "store faults: migrate": "I1, I2 — S3 → Azure migrations through a proxy failing half "
    "the requests: no object lost, no row dangling; a clean run finishes",
    "store faults: expire": "I1 — expirations on S3 under faults: rows and objects stay "
    "consistent; a clean run finishes",
    "store faults: collect": "I1, I3 — quarantine (S3) and delete (Azure) collections under "
    "faults: only orphans go, each to the trash or away, never a referenced object",
    "store faults: all kinds": "every fault kind the proxy injected across the four phases",
    "database outage mid-run": "I1, I2, I3 — the application database cut at a chosen step: "
    "the run stops partial, nothing deleted on unverified references, recover finishes",
    "kill -9 mid-migration": "I1, I2 — SIGKILL at every journaled step and at random points, "
    "recovery killed too, on file/S3/Azure with SQLite/PostgreSQL/MariaDB",
    "Celery worker killed mid-batch": "I1, I2 — a worker process killed; the batch is "
    "redelivered and settled exactly once",
    "scale-out: coordinator killed mid-run": "I1, I2, I5 — the process coordinating a "
    "fanned-out run SIGKILLed right after sending a wave: its lease lapses, the workers drop "
    "its queued batches and end the ones they started, the next run takes the lease over, "
    "recovers and completes (stopped_within_ms: kill to the last worker done)",
    "scale-out: worker process group killed": "I1, I2 — the only Celery worker (a prefork "
    "main process and its children) SIGKILLed as a process group mid-run: the run waits, a "
    "replacement worker gets the dead one's batches again, the run completes, each action "
    "once",
    "scale-out: broker restarted (Redis)": "I1, I2 — the broker and result backend (Redis, "
    "no persistence) SIGKILLed mid-run and started again: the coordinator waits through the "
    "outage by the catalog's ledger and stops partial, naming the lost batches; the next run "
    "completes",
    "scale-out: broker restarted (RabbitMQ)": "I1, I2 — a private RabbitMQ node stopped and "
    "started mid-run: batches in flight are ended and delivered again, the run completes, "
    "each action once",
    "scale-out: catalog restarted (PostgreSQL)": "I1, I2 — the catalog's PostgreSQL stopped "
    "and started mid-run: batches that met it away are tried again, the coordinator waits; "
    "the next run completes",
    "uploads racing collection": "I1, I3 — uploads (half referenced) while sweeps run: none "
    "deleted",
    "HTTP API fuzzing (schemathesis)": "generated requests against every route: no 5xx",
    "HTTP API under concurrent load": "clients uploading, reading back, resolving URLs and "
    "reading stats at once: every request answered, every object its own bytes",
    "property: keys": "I7 — any string: refused with a reason, or a key that stays under "
    "the tier's root",
    "property: sizes, ratios, durations": "I7 — any text parses to a bounded value or is "
    "refused with a message (found and fixed: overflow, wrong types)",
    "property: configuration": "I7 — any table: a Config or a ConfigError naming the field; "
    "a secret never in the message (found and fixed: floats where sizes belong)",
    "property: planner": "I1, I3 — any inventory, references and rules: no referenced object "
    "collected, no pinned/leased object touched, no object acted on twice, no migration "
    "to its own tier",
    "security: path traversal": "I7 — hostile keys on the command line, the Python API, the "
    "HTTP API and in application rows: refused, nothing outside the tier touched",
    "security: symbolic links in a file:// tier": "links to a folder and files outside the "
    "tier: never listed, followed, read or written through",
    "security: secrets in output": "I7 — a secret key and a database password never in "
    "check, stats, scan, error or debug-log output",
    "ages across moves": "I9 — objects migrated and recalled on file/S3/Azure keep their "
    "created instant; a catalog rebuilt by a scan still knows it",
    "archive tiers (GLACIER)": "I9 — copies to S3 GLACIER and Azure Archive verified by the "
    "store's checksum without a read; "
    "unverified copies deleted, killed runs recovered",
    "bad input: plan files": "I7 — truncated, empty, binary, tampered plan files: exit 2, "
    "nothing changed; a plan applies once",
    "soak, short (2 min, lifecycle every 15 s)": "I1, I2, I3 — scripts/soak.py in short "
    "(see Soak): every row's object intact, no row dangling, every eligible orphan "
    "collected, no error logged, every run ok",
}

SOAK_FIGURES = [  # (field of soak.json, what the report calls it)
    ("writes", "objects written by the application into the local folder, then a row"),
    ("uploads", "objects uploaded through the HTTP API (`shelflife serve`)"),
    ("reads", "objects read back by their row's location, bytes compared"),
    ("read_retries", "reads that found the object moved and read the row again"),
    ("unreferenced", "objects let go: column set to NULL, row deleted, upload never recorded"),
    ("deletes", "objects deleted by the application (the row, then the object)"),
    ("runs", "lifecycle runs by the daemon's schedule"),
    ("runs_ok", "runs that ended ok"),
    ("runs_partial", "runs that ended partial, each with its reasons"),
    ("migrated", "objects migrated local → S3 (rule by age)"),
    ("expired", "objects expired (tmp/ retention; their rows set to NULL)"),
    ("collected", "orphans collected"),
    ("rows_checked", "rows pointing at an object at the end, each read and compared"),
    ("lost", "referenced objects lost or changed"),
    ("dangling", "rows pointing at no object"),
    ("orphans_uncollected", "orphans a finished run found eligible and left"),
    ("errors", "ERROR or Traceback lines in the daemon's and the server's logs"),
]


def main() -> int:
    if not SOURCE.exists():
        print(f"no figures at {SOURCE}: run the test suite first (bash scripts/test.sh)")
        return 1
    data = json.loads(SOURCE.read_text())
    lines = [
        "# Reliability",
        "",
        "What shelflife was put through, with the figures of one full test run. This page is",
        "written by `scripts/reliability.py` from `.artifacts/reliability.json`, which the",
        "test suite records as it runs (`bash scripts/test.sh` regenerates both); nothing",
        "here is typed by hand.",
        "",
        f"- Run: {data['written_at']}, pytest exit status {data['exit_status']}",
        f"- Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "",
        "## Suites and figures",
        "",
        "| Suite | Figures | Tests | What it proves |",
        "|---|---|---|---|",
    ]
    for suite, entry in sorted(data["figures"].items()):
        counts = ", ".join(f"{name.replace('_', ' ')} {value:,}" for name, value in
                           sorted(entry["counts"].items()))  # fmt: skip
        tests = sorted({_short(test) for test in entry["tests"]})
        lines.append(
            f"| {suite} | {counts} | {'<br>'.join(tests)} | {WHAT_IT_PROVES.get(suite, '')} |"
        )
    if AUDIT.exists():
        audit = json.loads(AUDIT.read_text())
        lines.append(
            f"| dependency audit (pip-audit) | audited {audit['audited']}, skipped "
            f"{audit['skipped']}, vulnerabilities {audit['vulnerabilities']} | "
            f"scripts/audit.py | {audit['note']} |"
        )
    lines += ["", *soak_section()]
    lines += [
        "## Invariants and the tests that prove them",
        "",
        "Each test below is marked `@pytest.mark.invariant(...)` and would fail if the",
        "invariant were broken; the outcome is this run's.",
        "",
        "| Invariant | Test | Outcome |",
        "|---|---|---|",
    ]
    by_invariant: dict[str, dict[str, list[str]]] = {name: {} for name in INVARIANTS}
    for nodeid, entry in sorted(data["invariant_tests"].items()):
        for name in entry["invariants"]:
            by_invariant.setdefault(name, {}).setdefault(_short(nodeid), []).append(
                entry["outcome"]
            )
    missing = []
    for name, title in INVARIANTS.items():
        tests = by_invariant.get(name, {})
        if not tests:
            missing.append(name)
            lines.append(f"| **{name}** {title} | (none) | — |")
            continue
        for position, (test, outcomes) in enumerate(sorted(tests.items())):
            head = f"**{name}** {title}" if position == 0 else ""
            cases = f" ({len(outcomes)} cases)" if len(outcomes) > 1 else ""
            verdict = "passed" if set(outcomes) == {"passed"} else ", ".join(sorted(set(outcomes)))
            lines.append(f"| {head} | `{test}`{cases} | {verdict} |")
    TARGET.write_text("\n".join(lines) + "\n")
    print(f"wrote {TARGET.relative_to(ROOT)} from the run of {data['written_at']}")
    if missing:  # a partial run (pytest arguments) leaves some out
        print(f"warning: no test of this run proves {', '.join(missing)}", file=sys.stderr)
    return 0


def soak_section() -> list[str]:
    """The "Soak" section: the long soak's figures, or a line saying none is recorded."""
    chosen = None
    for path in (SOAK_RUN, SOAK_RECORD):
        if path.exists():
            figures = json.loads(path.read_text())
            if figures.get("minutes", 0) >= SOAK_MINUTES or path == SOAK_RECORD:
                chosen = figures
                break
    lines = ["## Soak", ""]
    if chosen is None:
        return [*lines, "No soak recorded: run `python scripts/soak.py --record`.", ""]
    mib = 2**20
    lines += [
        f"`scripts/soak.py`: {chosen['minutes']:g} minutes of `shelflife daemon` running "
        f"the lifecycle and the stats refresh every {chosen['period_seconds']} s, with a "
        "PostgreSQL catalog and application database, a `file://` tier and an S3 tier on "
        "moto, while an application wrote, uploaded, read, un-referenced and deleted objects "
        "at a steady rate; then every check below. Its short version runs in the suite "
        "(`tests/test_soak.py`, above).",
        "",
        f"- Run: {chosen['date']}, {chosen['machine']}; {chosen['failed_checks']} failed checks",
        f"- Daemon RSS {chosen['rss_start'] / mib:.1f} MiB after "
        f"{chosen['rss_warm_up_seconds'] / 60:g} min, {chosen['rss_end'] / mib:.1f} MiB at the "
        f"end: **{chosen['ratio']}×** (limit 1.2×); the API server "
        f"{chosen['serve_rss_start'] / mib:.1f} → {chosen['serve_rss_end'] / mib:.1f} MiB "
        f"({chosen['serve_ratio']}×)",
        "",
        "| Figure | Value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {chosen[name]:,} |" for name, label in SOAK_FIGURES if name in chosen]
    return [*lines, ""]


def rewrite_soak() -> int:
    """Replace the Soak section of docs/reliability.md, keeping the rest as it is."""
    text = TARGET.read_text()
    head, found, rest = text.partition("## Soak\n")
    if found:
        rest = rest[rest.index("\n## ") + 1 :]
    else:
        head, found, rest = text.partition("## Invariants")
        rest = found + rest
    TARGET.write_text(head + "\n".join(soak_section()) + "\n" + rest)
    print(f"rewrote the Soak section of {TARGET.relative_to(ROOT)}")
    return 0


def _short(nodeid: str) -> str:
    """``tests/test_x.py::test_y[param]`` → ``test_x.py::test_y``."""
    return nodeid.removeprefix("tests/").split("[", 1)[0]


if __name__ == "__main__":
    sys.exit(rewrite_soak() if sys.argv[1:] == ["--soak"] else main())
