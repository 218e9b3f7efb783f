"""The embedded scheduler: firing times across DST and time zones, missed-run catch-up,
one run per slot across daemons, and ``shelflife daemon`` running an entry for real."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from shelflife.catalog import Catalog
from shelflife.config.model import ScheduleConfig
from shelflife.service.schedule import (
    Scheduler,
    ScheduleState,
    fire_times,
    next_fire,
    previous_fire,
)
from tests.support.apps import make_app_shelf
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.servers import free_port, wait_for_port


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def firings(expression: str, zone: str, after: str, count: int) -> list[str]:
    times = itertools.islice(fire_times(expression, zone, utc(after)), count)
    return [t.isoformat() for t in times]


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # 03:00 Berlin stays 03:00 local across the spring change (UTC+1 → UTC+2)
        (
            "0 3 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00+00:00",
            ["2026-03-29T01:00:00+00:00", "2026-03-30T01:00:00+00:00"],
        ),
        # and across the autumn change (UTC+2 → UTC+1)
        (
            "0 3 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00+00:00",
            ["2026-10-25T02:00:00+00:00", "2026-10-26T02:00:00+00:00"],
        ),
        # 02:30 does not exist on 29 March in Berlin: it fires at the end of the gap
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00+00:00",
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"],
        ),
        # 02:30 happens twice on 25 October in Berlin: it fires once
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00+00:00",
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"],
        ),
        # New York changes on other dates (8 March, 1 November)
        (
            "0 3 * * *",
            "America/New_York",
            "2026-03-07T12:00:00+00:00",
            ["2026-03-08T07:00:00+00:00", "2026-03-09T07:00:00+00:00"],
        ),
        # a half-hour zone without DST
        (
            "0 3 * * *",
            "Asia/Kolkata",
            "2026-06-01T00:00:00+00:00",
            ["2026-06-01T21:30:00+00:00", "2026-06-02T21:30:00+00:00"],
        ),
        # hourly, UTC
        (
            "0 * * * *",
            "UTC",
            "2026-06-01T10:15:00+00:00",
            ["2026-06-01T11:00:00+00:00", "2026-06-01T12:00:00+00:00"],
        ),
    ],
)
def test_fire_times(expression: str, zone: str, after: str, expected: list[str]) -> None:
    assert firings(expression, zone, after, len(expected)) == expected


def test_the_repeated_hour_fires_once_for_frequent_entries_too() -> None:
    times = firings("0,30 * * * *", "Europe/Berlin", "2026-10-24T23:10:00+00:00", 4)
    # 01:30 CEST, 02:00 CEST, 02:30 CEST, then 03:00 CET (02:00 and 02:30 CET skipped)
    assert times == [
        "2026-10-24T23:30:00+00:00",
        "2026-10-25T00:00:00+00:00",
        "2026-10-25T00:30:00+00:00",
        "2026-10-25T02:00:00+00:00",
    ]


def test_previous_and_next_fire() -> None:
    at = utc("2026-06-01T10:15:00+00:00")
    assert previous_fire("0 3 * * *", "UTC", at) == utc("2026-06-01T03:00:00+00:00")
    assert previous_fire("0 3 * * *", "UTC", utc("2026-06-01T03:00:00+00:00")) == utc(
        "2026-06-01T03:00:00+00:00"
    )
    assert next_fire("0 3 * * *", "UTC", at) == utc("2026-06-02T03:00:00+00:00")


class Clock:
    def __init__(self, start: str) -> None:
        self.now = utc(start)

    def __call__(self) -> datetime:
        return self.now


def scheduler(tmp_path: Path, clock: Clock, calls: list[str], **schedule: str) -> Scheduler:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    config = ScheduleConfig(**schedule)  # type: ignore[arg-type]
    jobs = {"lifecycle": lambda: calls.append("lifecycle"), "stats": lambda: calls.append("stats")}
    return Scheduler(config, ScheduleState(catalog.engine), jobs, clock=clock)


def test_a_first_start_waits_for_the_next_slot(tmp_path: Path) -> None:
    clock, calls = Clock("2026-06-01T10:15:00+00:00"), []
    daily = scheduler(tmp_path, clock, calls, lifecycle="0 3 * * *", stats="")
    daily.begin()
    assert daily.run_pending() == []
    clock.now = utc("2026-06-02T03:00:05+00:00")
    assert daily.run_pending() == ["lifecycle"]
    assert daily.run_pending() == []  # the slot is taken
    assert calls == ["lifecycle"]


def test_missed_slots_after_downtime_run_once(tmp_path: Path) -> None:
    clock, calls = Clock("2026-06-01T10:15:00+00:00"), []
    first = scheduler(tmp_path, clock, calls, lifecycle="0 3 * * *", stats="0 * * * *")
    first.begin()
    clock.now = utc("2026-06-04T09:20:00+00:00")  # down for three days
    again = scheduler(tmp_path, clock, calls, lifecycle="0 3 * * *", stats="0 * * * *")
    again.begin()  # state exists: nothing is reset
    assert sorted(again.run_pending()) == ["lifecycle", "stats"]
    assert sorted(calls) == ["lifecycle", "stats"]  # once each, not once per missed slot
    assert again.run_pending() == []
    assert again.next_due() == utc("2026-06-04T10:00:00+00:00")


def test_two_daemons_run_a_slot_once(tmp_path: Path) -> None:
    clock, calls = Clock("2026-06-01T02:59:00+00:00"), []
    one = scheduler(tmp_path, clock, calls, lifecycle="0 3 * * *", stats="")
    two = scheduler(tmp_path, clock, calls, lifecycle="0 3 * * *", stats="")
    one.begin()
    two.begin()
    clock.now = utc("2026-06-01T03:00:01+00:00")
    assert one.run_pending() + two.run_pending() == ["lifecycle"]
    assert calls == ["lifecycle"]


def test_a_failing_job_does_not_stop_the_scheduler(tmp_path: Path) -> None:
    clock = Clock("2026-06-01T02:59:00+00:00")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")

    def explode() -> None:
        raise RuntimeError("boom")

    failing = Scheduler(
        ScheduleConfig(lifecycle="0 3 * * *", stats=None),
        ScheduleState(catalog.engine),
        {"lifecycle": explode},
        clock=clock,
    )
    failing.begin()
    clock.now = utc("2026-06-01T03:00:01+00:00")
    assert failing.run_pending() == ["lifecycle"]
    clock.now = utc("2026-06-02T03:00:01+00:00")
    assert failing.run_pending() == ["lifecycle"]


def test_schedule_status_warns_when_runs_are_overdue(tmp_path: Path) -> None:
    shelf = make_app_shelf(tmp_path, None)
    now = utc("2026-06-01T10:00:00+00:00")
    status = shelf.schedule_status(now)
    assert status["overdue"] is True  # 03:00 passed, no successful run ever
    assert "is 'shelflife daemon'" in status["message"]
    assert status["next_due"] == "2026-06-02T03:00:00+00:00"
    shelf.run()  # a success now (after the 03:00 slot of today's real date)
    fresh = shelf.schedule_status()
    assert fresh["overdue"] is False
    assert fresh["last_success"] is not None
    later = utc("2026-06-01T10:00:00+00:00") + timedelta(days=3650)
    assert shelf.schedule_status(later)["overdue"] is True  # years later: missed slots
    just_due = later.replace(hour=3, minute=30)
    assert shelf.schedule_status(just_due)["overdue"] is False  # within the hour's grace


def test_invalid_cron_is_refused_at_config_load(tmp_path: Path) -> None:
    (tmp_path / "shelflife.toml").write_text(
        '[tiers.local]\nurl = "file://out"\n[schedule]\nlifecycle = "0 25 * * *"\n'
    )
    result = shelflife("schedule", cwd=tmp_path)
    assert result.returncode == 2
    assert "schedule.lifecycle" in result.stderr
    assert "cron" in result.stderr


def test_daemon_runs_its_entries_and_serves(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "shelflife.toml").write_text("""
[catalog]
url = "sqlite:///catalog.db"
[tiers.local]
url = "file://outputs"
create = true
[schedule]
lifecycle = "* * * * * */2"   # every two seconds (croniter's sixth field)
stats = ""
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    daemon = subprocess.Popen(
        [SHELFLIFE, "daemon", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, daemon, "shelflife daemon")
        deadline = time.monotonic() + 30
        scheduled: list[dict[str, str]] = []
        while time.monotonic() < deadline and len(scheduled) < 2:
            time.sleep(0.5)
            history = json.loads(shelflife("runs", "--json", cwd=tmp_path).stdout)["runs"]
            scheduled = [r for r in history if r["trigger"] == "schedule"]
        assert len(scheduled) >= 2
        assert all(r["status"] == "ok" for r in scheduled)
        health = httpx.get(f"http://127.0.0.1:{port}/metrics/storage", timeout=10).json()
        assert health["schedule"]["last_success"] is not None
        assert health["schedule"]["overdue"] is False
        listed = shelflife("schedule", "--json", cwd=tmp_path)
        assert len(json.loads(listed.stdout)["next"]["lifecycle"]) == 3
    finally:
        daemon.terminate()
        daemon.wait(30)
