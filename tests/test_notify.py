"""[[notify]] webhooks: real `shelflife` processes posting to a real HTTP receiver on
loopback — run-finished/failed/refused, plan-above, health-changed — with retries,
timeouts and secrets kept out of every log line and output; and the pure parts (config
validation, body shapes, event filtering, URL masking) on their own."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shelflife.base.urls import mask_url, url_secrets
from shelflife.config.load import parse_config
from shelflife.errors import ConfigError
from shelflife.model.actions import Action, Failure
from shelflife.model.outcome import RunOutcome
from shelflife.model.plan import Plan
from shelflife.service import notify
from tests.support.apps import AppTable
from tests.support.cli import shelflife, write_config
from tests.support.receiver import receiver
from tests.support.servers import free_port

TOKEN = "tok3n-in-the-query-9f8e7d"
BEARER = "bearer-secret-5a4b3c2d1e"

ORPHANS = """
[[rules]]
id = "orphans"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 1.0
"""
RUN_EVENTS = '["run-finished", "run-failed", "run-refused"]'


def target(url: str, **fields: Any) -> str:
    """A [[notify]] entry (fields as TOML values)."""
    lines = [f"{name} = {value}" for name, value in fields.items()]
    return "\n".join(["[[notify]]", f'url = "{url}"', *lines]) + "\n"


@pytest.fixture
def app(pg_url: str) -> AppTable:
    return AppTable(pg_url)


def files(tmp_path: Path, *names: str) -> None:
    for name in names:
        path = tmp_path / "outputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def referenced(app: AppTable, *names: str) -> None:
    app.insert(*(f"data/storage/outputs/{name}" for name in names))


# -- real runs, real receiver ------------------------------------------------------------------


def test_a_finished_run_posts_its_run_json(tmp_path: Path, app: AppTable) -> None:
    with receiver() as hook:
        write_config(tmp_path, app, rules=ORPHANS, extra=target(hook.url))
        files(tmp_path, "keep.mp4", "drop.mp4")
        referenced(app, "keep.mp4")
        result = shelflife("run", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        (request,) = hook.wait_for(1)
    body = request.body
    assert body["event"] == "run-finished"
    assert request.headers["X-Shelflife-Event"] == "run-finished"
    assert request.headers["Content-Type"] == "application/json"
    assert datetime.fromisoformat(body["at"]).tzinfo is not None
    assert body["shelflife"]["version"]
    assert body["shelflife"]["host"]
    assert body["shelflife"]["config"] == str(tmp_path / "shelflife.toml")
    run = body["run"]
    assert run["run_id"] == printed["run_id"]
    assert run["status"] == "ok"
    assert run["command"] == "run"
    assert run["totals"] == printed["totals"] == {"delete-orphan": {"objects": 1, "bytes": 8}}
    assert run["failed"] == []
    assert run["failed_count"] == 0
    assert "actions" not in run  # the header: a run's action list can be long


def test_a_refused_run_posts_run_refused_and_keeps_exit_3(tmp_path: Path, app: AppTable) -> None:
    with receiver() as hook:
        extra = "[executor]\nmax_delete = 1\n" + target(hook.url, events=RUN_EVENTS)
        write_config(tmp_path, app, rules=ORPHANS, extra=extra)
        files(tmp_path, "keep", "a", "b")
        referenced(app, "keep")
        result = shelflife("gc", cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        (request,) = hook.wait_for(1)
    assert request.body["event"] == "run-refused"
    run = request.body["run"]
    assert run["status"] == "refused"
    assert run["command"] == "gc"
    assert "max_delete = 1" in run["reason"]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["a", "b", "keep"]


def test_a_failing_store_posts_run_failed(tmp_path: Path, app: AppTable) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cloud = f"""
[tiers.cloud]
url = "s3://nowhere/prefix"
endpoint = "{dead}"
access_key = "key-id"
secret_key = "never-shown-secret"
retries = 0
"""
    with receiver() as hook:
        write_config(
            tmp_path, app, rules=ORPHANS, extra=cloud + target(hook.url, events=RUN_EVENTS)
        )
        files(tmp_path, "keep")
        referenced(app, "keep")
        result = shelflife("run", "--json", cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        (request,) = hook.wait_for(1)
    assert request.body["event"] == "run-failed"
    run = request.body["run"]
    assert run["status"] == "partial"
    assert run["failed_count"] == 1
    (failure,) = run["failed"]
    assert failure["tier"] == "cloud"
    assert "listing failed" in failure["error"]


def test_a_plan_above_the_threshold_is_told_to_the_targets_that_count_it(
    tmp_path: Path, app: AppTable
) -> None:
    with receiver() as deletions, receiver() as moves:
        extra = target(deletions.url, plan_above_objects=1) + target(
            moves.url, plan_above_objects=1, plan_above_actions='["migrate"]'
        )
        write_config(tmp_path, app, rules=ORPHANS, extra=extra)
        files(tmp_path, "keep", "a", "b")
        referenced(app, "keep")
        result = shelflife("plan", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        (request,) = deletions.wait_for(1)
        # Planned again, by a dry run: told again (a dry run sends no run event).
        assert shelflife("gc", "--dry-run", cwd=tmp_path).returncode == 0
        second = deletions.wait_for(2)[1].body
    assert moves.requests == []
    body = request.body
    assert body["event"] == "plan-above"
    assert body["command"] == "plan"
    assert body["dry_run"] is True
    assert body["above"] == {
        "objects": 2,
        "bytes": 2,
        "actions": ["migrate", "expire", "delete-orphan", "quarantine"],
        "plan_above_objects": 1,
        "plan_above_bytes": None,
    }
    assert body["plan"]["plan_id"] == printed["plan_id"]
    assert body["plan"]["totals"] == printed["totals"]
    assert "actions" not in body["plan"]
    assert (second["event"], second["command"], second["dry_run"]) == ("plan-above", "gc", True)


def test_health_changed_when_the_orphan_share_crosses_the_warning(
    tmp_path: Path, app: AppTable
) -> None:
    with receiver() as hook:
        extra = "[health]\norphan_warning = 0.15\norphan_critical = 0.5\n" + target(hook.url)
        write_config(tmp_path, app, extra=extra)
        names = [f"{i}.mp4" for i in range(5)]
        files(tmp_path, *names)
        referenced(app, *names)
        first = shelflife("stats", "--refresh", "--json", cwd=tmp_path)
        assert json.loads(first.stdout)["health"]["status"] == "healthy", first.stderr
        app.delete("data/storage/outputs/0.mp4")  # one in five: 20 %, over the 15 %
        second = shelflife("stats", "--refresh", "--json", cwd=tmp_path)
        assert json.loads(second.stdout)["health"]["status"] == "warning", second.stderr
        (request,) = hook.wait_for(1)
        assert shelflife("stats", "--refresh", cwd=tmp_path).returncode == 0  # no change
        app.insert("data/storage/outputs/0.mp4")
        assert shelflife("stats", "--refresh", cwd=tmp_path).returncode == 0  # back
        hook.wait_for(2)
    body = request.body
    assert body["event"] == "health-changed"
    assert (body["from"], body["to"]) == ("healthy", "warning")
    assert any("orphan" in reason for reason in body["reasons"])
    assert body["stats"]["tiers"]["local"]["orphan_objects"] == 1
    assert body["stats"]["health"]["status"] == "warning"
    back = hook.bodies()[1]
    assert (back["from"], back["to"]) == ("warning", "healthy")
    assert len(hook.bodies()) == 2


def test_a_receiver_that_fails_at_first_gets_it_once_after_retries(
    tmp_path: Path, app: AppTable
) -> None:
    with receiver([500, 500]) as hook:
        write_config(tmp_path, app, rules=ORPHANS, extra=target(hook.url))
        files(tmp_path, "keep")
        referenced(app, "keep")
        result = shelflife("-v", "run", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        requests = hook.wait_for(3)
    assert len(requests) == 3  # two failures, one delivery, nothing more
    assert [r.headers["X-Shelflife-Attempt"] for r in requests] == ["1", "2", "3"]
    assert len({r.headers["X-Shelflife-Delivery"] for r in requests}) == 1
    assert all(r.body == requests[0].body for r in requests)
    assert "run-finished attempt 1 failed (HTTP 500); retrying" in result.stderr
    assert "run-finished attempt 2 failed (HTTP 500); retrying" in result.stderr
    assert "run-finished delivered (HTTP 200, attempt 3)" in result.stderr


def test_429_is_retried_after_its_retry_after_404_is_not_and_500_until_retries_run_out(
    tmp_path: Path, app: AppTable
) -> None:
    with (
        receiver([429], retry_after="1") as busy,
        receiver([404]) as wrong,
        receiver([500] * 10) as broken,
    ):
        extra = target(busy.url) + target(wrong.url) + target(broken.url, retries=2)
        write_config(tmp_path, app, rules=ORPHANS, extra=extra)
        files(tmp_path, "keep")
        referenced(app, "keep")
        result = shelflife("-v", "run", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(busy.wait_for(2)) == 2
        assert len(wrong.wait_for(1)) == 1
        assert len(broken.wait_for(3)) == 3
    assert "attempt 1 failed (HTTP 429); retrying in 1.0s" in result.stderr
    assert "notify notify[2]" in result.stderr
    assert "run-finished not delivered after 3 attempts: HTTP 500" in result.stderr
    assert (
        f"notify notify[1] ({wrong.url}): run-finished not delivered after 1 attempt: HTTP 404"
        in (result.stderr)
    )


def test_a_receiver_that_never_answers_neither_fails_nor_holds_the_run(
    tmp_path: Path, app: AppTable
) -> None:
    with receiver(stall=1.5) as hook:  # five times the 0.3 s timeout: never answered in time
        url = f"{hook.url}?token={TOKEN}"
        entry = target(
            url,
            timeout='"0.3s"',
            retries=1,
            headers=f'{{ X-Api-Key = "{BEARER}" }}',
            events=RUN_EVENTS,
        )
        extra = "[executor]\nmax_delete = 1\n" + entry
        write_config(tmp_path, app, rules=ORPHANS, extra=extra)
        files(tmp_path, "keep", "a", "b")
        referenced(app, "keep")
        result = shelflife("-vv", "gc", "--json", cwd=tmp_path)
        assert len(hook.wait_for(2)) == 2  # tried, and tried again
    assert result.returncode == 3  # the run's own code: refused
    assert json.loads(result.stdout)["status"] == "refused"
    masked = f"http://127.0.0.1:{hook.port}/hook?token=***"
    assert f"WARNING shelflife.notify: notify notify[0] ({masked}): run-refused not delivered" in (
        result.stderr
    )
    assert "timed out" in result.stderr
    for secret in (TOKEN, BEARER):
        assert secret not in result.stderr
        assert secret not in result.stdout


def test_an_unreachable_receiver_is_logged_masked_and_the_run_keeps_its_code(
    tmp_path: Path, app: AppTable
) -> None:
    url = f"http://user:{TOKEN}@127.0.0.1:{free_port()}/hooks/{BEARER}?token={TOKEN}"
    write_config(tmp_path, app, rules=ORPHANS, extra=target(url, retries=1))
    files(tmp_path, "keep", "drop")
    referenced(app, "keep")
    result = shelflife("run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run-finished not delivered after 2 attempts: Connection refused" in result.stderr
    assert "http://user:***@127.0.0.1:" in result.stderr
    assert "/hooks/***?token=***" in result.stderr
    for secret in (TOKEN, BEARER):
        assert secret not in result.stderr


def test_secrets_stay_out_of_check_and_notify_test(tmp_path: Path, app: AppTable) -> None:
    with receiver() as hook:
        url = f"{hook.url}?token={TOKEN}"
        entry = target(
            url, name='"ops"', headers=f'{{ Authorization = "Bearer {BEARER}" }}'
        ) + target(f"http://127.0.0.1:{free_port()}/gone", name='"gone"', retries=0)
        write_config(tmp_path, app, extra=entry)
        check = shelflife("check", "--json", cwd=tmp_path)
        plain = shelflife("check", cwd=tmp_path)
        sent = shelflife("notify", "test", "--name", "ops", "--json", cwd=tmp_path)
        (request,) = hook.wait_for(1)
        both = shelflife("notify", "test", cwd=tmp_path)
        unknown = shelflife("notify", "test", "--name", "nobody", cwd=tmp_path)
    listed = {
        c["name"]: c for c in json.loads(check.stdout)["checks"] if c["component"] == "notify"
    }
    assert listed["ops"]["message"].startswith(f"http://127.0.0.1:{hook.port}/hook?token=***")
    assert "run-finished" in listed["ops"]["message"]
    assert "notify ops: http://127.0.0.1" in plain.stdout
    assert sent.returncode == 0, sent.stderr
    (delivery,) = json.loads(sent.stdout)["deliveries"]
    assert delivery == {
        "name": "ops",
        "url": f"http://127.0.0.1:{hook.port}/hook?token=***",
        "event": "test",
        "delivered": True,
        "attempts": 1,
        "status": 200,
        "error": None,
    }
    assert request.body["event"] == "test"
    assert request.headers["Authorization"] == f"Bearer {BEARER}"
    assert request.path == f"/hook?token={TOKEN}"
    assert both.returncode == 1  # "gone" was not delivered
    assert "gone" in both.stdout
    assert "Connection refused" in both.stdout
    assert unknown.returncode == 2
    assert "no [[notify]] target named 'nobody'" in unknown.stderr
    for output in (check, plain, sent, both, unknown):
        for secret in (TOKEN, BEARER):
            assert secret not in output.stdout
            assert secret not in output.stderr


def test_the_python_api_notifies_and_flush_waits(tmp_path: Path) -> None:
    from shelflife import Shelf

    (tmp_path / "hot").mkdir()
    (tmp_path / "cold").mkdir()
    (tmp_path / "hot" / "old.bin").write_bytes(b"12345")
    with receiver() as everything, receiver() as failures:
        config = parse_config(
            {
                "catalog": {"url": "sqlite:///catalog.db"},
                "tiers": {"hot": {"url": "file://hot"}, "cold": {"url": "file://cold"}},
                "rules": [
                    {"id": "age", "tier": "hot", "action": "migrate", "to": "cold", "after": "0s"}
                ],
                "notify": [
                    {"url": everything.url, "plan_above_bytes": "4B"},
                    {"url": failures.url, "events": ["run-failed"]},
                ],
            },
            base_dir=tmp_path,
            source="test",
        )
        shelf = Shelf(config)
        try:
            outcome = shelf.run()
        finally:
            shelf.close()
        assert notify.flush(timeout=30)
        events = [body["event"] for body in everything.bodies()]
    assert sorted(events) == ["plan-above", "run-finished"]
    assert everything.bodies("run-finished")[0]["run"]["run_id"] == outcome.run_id
    (above,) = everything.bodies("plan-above")
    assert above["dry_run"] is False
    assert above["above"]["bytes"] == 5
    assert failures.requests == []


# -- config -------------------------------------------------------------------------------------


def config_with(*entries: dict[str, Any]) -> Any:
    raw = {"tiers": {"local": {"url": "memory://t"}}, "notify": list(entries)}
    return parse_config(raw, base_dir=Path("."), source="test.toml", env={})


def test_events_default_to_runs_and_health_and_plan_above_with_a_threshold() -> None:
    config = config_with(
        {"url": "http://h/a"},
        {"url": "http://h/b", "plan_above_bytes": "1GB"},
        {"url": "http://h/c", "events": ["run-failed"]},
        {"url": "http://h/d", "name": "big", "events": ["plan-above"], "plan_above_objects": 10},
    )
    runs_and_health = ("run-finished", "run-failed", "run-refused", "health-changed")
    found = notify.targets(config)
    assert [t.config.wanted for t in found] == [
        runs_and_health,
        (*runs_and_health, "plan-above"),
        ("run-failed",),
        ("plan-above",),
    ]
    assert [t.name for t in found] == ["notify[0]", "notify[1]", "notify[2]", "big"]
    assert found[1].config.plan_above_bytes == 1_000_000_000
    assert found[0].config.timeout.total_seconds() == 5
    assert found[0].config.retries == 3


@pytest.mark.invariant("I7")
@pytest.mark.parametrize(
    ("entry", "path", "words"),
    [
        ({"url": "http://h/", "events": ["run-done"]}, "notify[0].events[0]", "run-finished"),
        ({"url": "http://h/", "events": []}, "notify[0].events", "at least one event"),
        ({"url": "http://h/", "events": ["plan-above"]}, "notify[0]", "plan_above_objects"),
        ({"url": "http://h/", "events": ["run-failed"], "plan_above_objects": 3}, "notify[0]", ""),
        ({"url": f"ftp://h/?token={TOKEN}"}, "notify[0].url", "http:// or https://"),
        ({"url": "http://h/", "headers": {"Bad Name": "x"}}, "notify[0].headers", "header name"),
        ({"url": "http://h/", "timeout": "5m"}, "notify[0].timeout", "between"),
        ({"url": "http://h/", "retries": 50}, "notify[0].retries", "less than or equal"),
        (
            {"url": "http://h/", "plan_above_actions": ["recall"]},
            "notify[0].plan_above_actions",
            "",
        ),
        ({"url": "http://h/", "sent_to": "x"}, "notify[0].sent_to", "unknown key"),
    ],
)
def test_bad_notify_entries_name_their_field(entry: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with(entry)
    assert f"{path}: " in caught.value.message
    assert words in caught.value.message
    assert TOKEN not in caught.value.message


def test_notify_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="notify names must be unique; repeated: \\['ops'\\]"):
        config_with({"url": "http://h/a", "name": "ops"}, {"url": "http://h/b", "name": "ops"})


def test_the_url_and_headers_may_come_from_the_environment_and_files(tmp_path: Path) -> None:
    (tmp_path / "hook.url").write_text(f"https://hooks.example/services/{TOKEN}\n")
    raw = {
        "tiers": {"local": {"url": "memory://t"}},
        "notify": [
            {"url_file": "hook.url"},
            {"url": "${HOOK_URL}", "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"}},
        ],
    }
    env = {"HOOK_URL": f"http://h/x?token={TOKEN}", "HOOK_TOKEN": BEARER}
    config = parse_config(raw, base_dir=tmp_path, source="test.toml", env=env)
    first, second = notify.targets(config)
    assert first.config.url.get_secret_value() == f"https://hooks.example/services/{TOKEN}"
    assert first.masked_url == "https://hooks.example/services/***"
    assert second.config.headers["Authorization"].get_secret_value() == f"Bearer {BEARER}"
    assert TOKEN not in repr(config)
    assert BEARER not in repr(config)
    assert second.describe() == {
        "name": "notify[1]",
        "url": "http://h/x?token=***",
        "events": ["run-finished", "run-failed", "run-refused", "health-changed"],
        "headers": ["Authorization"],
    }
    from shelflife.base.logs import redact

    assert redact(f"got {TOKEN} and Bearer {BEARER}") == "got *** and ***"


# -- bodies and masking (pure) -----------------------------------------------------------------


NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_run_json_is_the_run_header_with_the_recorded_status() -> None:
    outcome = RunOutcome("gc", Plan(now=NOW, id="plan-1"), run_id="run-1")
    outcome.actions = [Action("delete-orphan", "orphans", "local", "a", 3)]
    outcome.failed = [Failure("orphans", "local", f"k{i}", "boom") for i in range(60)]
    body = notify.run_json(outcome, "partial", "stopped")
    assert body == {**outcome.header_json(), "failed": body["failed"], "failed_count": 60}
    assert len(body["failed"]) == notify.FAILED_LISTED
    assert body["totals"] == {"delete-orphan": {"objects": 1, "bytes": 3}}
    failed = notify.run_json(RunOutcome("run", Plan(now=NOW), run_id="r"), "failed", "boom")
    assert (failed["status"], failed["error"]) == ("failed", "boom")
    refused = notify.run_json(RunOutcome("run", Plan(now=NOW), run_id="r"), "refused", "caps")
    assert (refused["status"], refused["reason"]) == ("refused", "caps")


def test_run_events_by_status() -> None:
    assert {s: notify.run_event(s) for s in ("ok", "partial", "failed", "refused")} == {
        "ok": "run-finished",
        "partial": "run-failed",
        "failed": "run-failed",
        "refused": "run-refused",
    }


def test_plan_over_counts_the_named_actions_strictly_above() -> None:
    plan = Plan(now=NOW)
    plan.add(Action("migrate", "m", "local", "a", 100, to="cloud"))
    plan.add(Action("expire", "e", "cloud", "b", 10))
    plan.add(Action("expire", "e", "cloud", "c", 10))
    (config,) = config_with({"url": "http://h/", "plan_above_objects": 3}).notify
    assert notify.plan_over(config, plan) is None  # 3 actions: not more than 3
    (config,) = config_with({"url": "http://h/", "plan_above_objects": 2}).notify
    assert notify.plan_over(config, plan) == {
        "objects": 3,
        "bytes": 120,
        "actions": ["migrate", "expire", "delete-orphan", "quarantine"],
        "plan_above_objects": 2,
        "plan_above_bytes": None,
    }
    deletions = {"plan_above_actions": ["expire", "delete-orphan", "quarantine"]}
    (config,) = config_with({"url": "http://h/", "plan_above_bytes": "50B", **deletions}).notify
    assert notify.plan_over(config, plan) is None  # 20 bytes deleted; the move not counted
    (config,) = config_with({"url": "http://h/", "plan_above_bytes": "19B", **deletions}).notify
    over = notify.plan_over(config, plan)
    assert over is not None
    assert (over["objects"], over["bytes"]) == (2, 20)


def test_health_change_only_on_a_change() -> None:
    def stats(status: str, *reasons: str) -> dict[str, Any]:
        return {"tiers": {}, "health": {"status": status, "reasons": list(reasons)}}

    assert notify.health_change(stats("healthy"), stats("healthy")) is None
    assert notify.health_change(None, stats("healthy")) is None
    assert notify.health_change(None, stats("critical", "x"))["from"] is None  # type: ignore[index]
    change = notify.health_change(stats("healthy"), stats("warning", "orphans 20%"))
    assert change == {
        "from": "healthy",
        "to": "warning",
        "reasons": ["orphans 20%"],
        "stats": stats("warning", "orphans 20%"),
    }


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("https://h/hook?token=abc&x=1", "https://h/hook?token=***&x=***"),
        ("https://u:p4ss@h/hook", "https://u:***@h/hook"),
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/services/***"),
        ("https://h", "https://h"),
        ("https://[::1]:9/a/b#frag", "https://[::1]:9/a/***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    hidden = url_secrets(url)
    assert (url in hidden) == (url != masked)
    assert all(part not in masked for part in hidden if len(part) >= 4)


def test_only_credential_like_query_values_are_masked_in_every_log_line() -> None:
    hidden = url_secrets("https://h/hook?format=json&token=abc&sig=0123456789abcdef")
    assert "json" not in hidden  # else every log line saying "json" would read "***"
    assert "abc" in hidden
    assert "0123456789abcdef" in hidden


def test_a_retry_after_in_fractional_seconds_is_read_and_kept_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Retry-After: 0.5`` is waited as asked; ``12.5`` is more than notify ever waits
    (10 s), so the delivery gives up at once instead of retrying sooner than asked."""
    caplog.set_level("INFO", logger="shelflife")
    with receiver([429], retry_after="0.5") as soon, receiver([429], retry_after="12.5") as late:
        first, second = notify.targets(config_with({"url": soon.url}, {"url": late.url}))
        delivered = notify.deliver(first, {"event": "run-finished"})
        refused = notify.deliver(second, {"event": "run-finished"})
        assert len(soon.requests) == 2
        assert len(late.requests) == 1
    assert delivered.delivered
    assert delivered.attempts == 2
    assert "attempt 1 failed (HTTP 429); retrying in 0.5s" in caplog.text
    assert not refused.delivered
    assert refused.attempts == 1
    assert "asked to retry after 12s: more than 10s" in (refused.error or "")
