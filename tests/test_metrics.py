"""Metrics, health, alert rules and the dashboard — against promtool, a real Prometheus
server scraping ``shelflife serve``, and the catalog."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.request
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shelflife.api import metrics
from shelflife.config.model import HealthConfig
from shelflife.engine.stats import TierUsage, classify
from shelflife.service.records import refresh_stats
from tests.support.apps import AppTable, make_app_shelf, orphan_rule
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.objects import REF, stored
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: scripts/test.sh installs Debian's prometheus package"
        )
    return path


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


# -- health ------------------------------------------------------------------------------

THRESHOLDS = HealthConfig()  # orphans 10 % / 25 %, usage 80 % / 95 %


def tier(
    objects: int = 100,
    size: int = 1000,
    capacity: int | None = None,
    used: int | None = None,
    orphans: int | None = 0,
    orphan_bytes: int | None = 0,
) -> TierUsage:
    return TierUsage(
        "t", objects, size, capacity, size if used is None else used, 0.8, 0.7,
        None if orphans is None else objects - orphans, orphans, orphan_bytes,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("usage", "status"),
    [
        (tier(), "healthy"),
        (tier(capacity=1000, used=799), "healthy"),
        (tier(capacity=1000, used=800), "warning"),  # at the threshold: reached
        (tier(capacity=1000, used=949), "warning"),
        (tier(capacity=1000, used=950), "critical"),
        (tier(capacity=None, used=10**12), "healthy"),  # no capacity: no usage figure
        (tier(orphans=9, orphan_bytes=99), "healthy"),
        (tier(orphans=10, orphan_bytes=0), "warning"),  # 10 % of the objects
        (tier(orphans=1, orphan_bytes=100), "warning"),  # 10 % of the bytes
        (tier(orphans=24, orphan_bytes=249), "warning"),
        (tier(orphans=25, orphan_bytes=0), "critical"),
        (tier(orphans=0, orphan_bytes=0), "healthy"),
        (tier(orphans=None, orphan_bytes=None), "healthy"),  # no reference snapshot yet
        (tier(objects=0, size=0, orphans=0), "healthy"),
    ],
)
def test_health_at_the_boundaries(usage: TierUsage, status: str) -> None:
    health = classify([usage], THRESHOLDS)
    assert health.status == status
    assert (health.reasons == []) == (status == "healthy")
    for reason in health.reasons:
        assert "tier t" in reason


def test_the_worst_tier_decides_and_every_reason_is_listed() -> None:
    health = classify([tier(capacity=1000, used=850), tier(orphans=30, orphan_bytes=0)], THRESHOLDS)
    assert health.status == "critical"
    assert len(health.reasons) == 2
    assert any("85% full (warning at 80%)" in r for r in health.reasons)
    assert any("30 of 100 objects" in r and "critical at 25%" in r for r in health.reasons)


# -- metrics from the catalog ----------------------------------------------------------


def test_metrics_come_from_the_catalog_and_survive_restarts(tmp_path: Path) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    tiers = {
        "local": {
            "url": f"file://{tmp_path / 'outputs'}",
            "create": True,
            "ref_format": REF.format("{key}"),
            "capacity": "10KB",
        },
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    rules = [
        orphan_rule(),
        {"id": "old", "tier": "local", "action": "migrate", "to": "cloud", "after": "1d"},
    ]
    shelf = make_app_shelf(tmp_path, app, tiers=tiers, rules=rules)
    stored(shelf, "a.bin", "b.bin", "orphan.bin", days=3)  # 50, 50, 100 bytes
    stored(shelf, "fresh.bin")
    app.insert(REF.format("a.bin"), REF.format("b.bin"), REF.format("fresh.bin"))
    outcome = shelf.run()
    assert outcome.status == "ok"

    found = samples(metrics.render(shelf).decode())
    assert found[("shelflife_tier_bytes", (("tier", "local"),))] == 90  # fresh.bin
    assert found[("shelflife_tier_bytes", (("tier", "cloud"),))] == 100
    assert found[("shelflife_tier_capacity_bytes", (("tier", "local"),))] == 10_000
    assert found[("shelflife_tier_usage_ratio", (("tier", "local"),))] == pytest.approx(0.009)
    assert found[("shelflife_tier_objects", (("tier", "cloud"),))] == 2
    assert found[("shelflife_referenced_objects", (("tier", "cloud"),))] == 2
    assert found[("shelflife_orphan_objects", (("tier", "local"),))] == 0
    assert found[("shelflife_health", (("status", "healthy"),))] == 1
    assert found[("shelflife_health", (("status", "critical"),))] == 0
    done = (("action", "migrate"), ("outcome", "done"))
    assert found[("shelflife_actions_total", done)] == 2
    deleted = (("action", "delete-orphan"), ("outcome", "done"))
    assert found[("shelflife_actions_total", deleted)] == 1
    assert found[("shelflife_moved_bytes_total", (("from", "local"), ("to", "cloud")))] == 100
    orphan = (("reason", "orphan"), ("tier", "local"))
    assert found[("shelflife_deleted_bytes_total", orphan)] == 100
    assert found[("shelflife_runs_total", (("command", "run"), ("status", "ok")))] == 1
    assert found[("shelflife_run_duration_seconds_count", ())] == 1
    assert found[("shelflife_run_in_progress", ())] == 0
    assert found[("shelflife_last_success_timestamp_seconds", ())] > time.time() - 60

    # a second run and a fresh process: counters add up from the catalog
    stored(shelf, "orphan2.bin", days=3)
    shelf.run()
    shelf.close()
    again = make_app_shelf(tmp_path, app, tiers=tiers, rules=rules)
    found = samples(metrics.render(again).decode())
    assert found[("shelflife_actions_total", deleted)] == 2
    assert found[("shelflife_deleted_bytes_total", orphan)] == 210
    assert found[("shelflife_runs_total", (("command", "run"), ("status", "ok")))] == 2
    assert found[("shelflife_run_duration_seconds_count", ())] == 2


def test_a_scrape_never_lists_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf = make_app_shelf(tmp_path, None)
    shelf.put(b"x" * 10, "a.bin")
    refresh_stats(shelf.context)
    from shelflife.stores._obstore import ObstoreStore

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a scrape listed a store")

    monkeypatch.setattr(ObstoreStore, "list", refuse)
    monkeypatch.setattr(ObstoreStore, "head", refuse)
    found = samples(metrics.render(shelf).decode())
    assert found[("shelflife_tier_bytes", (("tier", "local"),))] == 10


# -- deploy/ ---------------------------------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    rules = DEPLOY / "prometheus"
    check = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=rules, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "7 rules found" in check.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=rules, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=rules, capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert names == tested


METRIC_NAME = re.compile(r"\bshelflife_[a-z_]+\b")


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "shelflife.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 12
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    exported = metrics.exported_names()
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert named - exported == set()
    # and the dashboard covers what the issue asks for
    for wanted in (
        "shelflife_tier_usage_ratio",
        "shelflife_tier_high_watermark_ratio",
        "shelflife_orphan_bytes",
        "shelflife_moved_bytes_total",
        "shelflife_deleted_bytes_total",
        "shelflife_run_duration_seconds_bucket",
        "shelflife_health",
    ):
        assert wanted in named
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_a_real_prometheus_scrapes_shelflife_serve(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    shelf = make_app_shelf(tmp_path, None)
    shelf.put(b"y" * 1234, "a.bin")
    shelf.close()
    (tmp_path / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///{tmp_path / "catalog.db"}"
[tiers.local]
url = "file://{tmp_path / "outputs"}"
create = true
ref_format = "data/storage/outputs/{{key}}"
""")
    port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    server = subprocess.Popen(
        [SHELFLIFE, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: shelflife
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server, "shelflife serve")
        wait_for_port(prom_port, prom, "prometheus")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert json.load(reply)["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/storage") as reply:
            health = json.load(reply)
        assert health["status"] == "healthy"
        assert health["tiers"]["local"]["bytes"] == 1234
        query = f"http://127.0.0.1:{prom_port}/api/v1/query?query=shelflife_tier_bytes"
        deadline = time.monotonic() + 60
        result: list[Any] = []
        while time.monotonic() < deadline and not result:
            with urllib.request.urlopen(query, timeout=10) as reply:
                result = json.load(reply)["data"]["result"]
            time.sleep(0.5)
        assert result, "Prometheus never scraped shelflife_tier_bytes"
        series = {item["metric"]["tier"]: float(item["value"][1]) for item in result}
        assert series == {"local": 1234.0}
        assert result[0]["metric"]["job"] == "shelflife"
    finally:
        for process in (prom, server):
            process.terminate()
            process.wait(20)


# -- logs --------------------------------------------------------------------------------


SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
DB_PASSWORD = "Pg-passw0rd-never-shown"


@pytest.mark.s3
def test_secrets_never_appear_in_logs_or_errors(
    tmp_path: Path, s3_endpoint: str, pg_url: str
) -> None:
    from tests.support.servers import make_s3_bucket

    bucket = make_s3_bucket(s3_endpoint)
    app = AppTable(pg_url)
    secret_url = pg_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
    assert DB_PASSWORD in secret_url  # trust authentication accepts any password
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "old.bin").write_bytes(b"old")
    stamp = time.time() - 10 * 86400
    os.utime(tmp_path / "outputs" / "old.bin", (stamp, stamp))
    (tmp_path / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[databases.app]
url = "{secret_url}"
[databases.broken]
url = "{secret_url.rsplit("/", 1)[0]}/no_such_database_here"
[tiers.local]
url = "file://outputs"
create = true
ref_format = "data/storage/outputs/{{key}}"
[tiers.cloud]
url = "s3://{bucket}/x"
endpoint = "{s3_endpoint}"
region = "us-east-1"
access_key = "testing"
secret_key = "{SECRET_KEY}"
ref_format = "s3://{bucket}/x/{{key}}"
[[references]]
database = "app"
table = "{app.name}"
column = "path"
[[rules]]
id = "old"
tier = "local"
action = "migrate"
to = "cloud"
after = "1d"
""")
    app.insert("data/storage/outputs/old.bin")
    outputs = []
    for args in (
        ("--log-level", "debug", "--log-format", "json", "run"),
        ("--log-level", "debug", "check"),
        ("--log-level", "debug", "runs", "--json"),
        ("--log-level", "info", "stats", "--json"),
    ):
        result = shelflife(*args, cwd=tmp_path)
        outputs.append(result.stdout + result.stderr)
    broken = tmp_path / "broken.toml"
    broken.write_text(
        (tmp_path / "shelflife.toml").read_text().replace('database = "app"', 'database = "broken"')
    )
    failed = shelflife(
        "-c", str(broken), "--log-level", "debug", "audit", "--no-scan", cwd=tmp_path
    )
    assert failed.returncode != 0
    outputs.append(failed.stdout + failed.stderr)
    typo = tmp_path / "typo.toml"  # a mistyped catalog scheme: the error shows the URL
    typo.write_text(
        (tmp_path / "shelflife.toml")
        .read_text()
        .replace('url = "sqlite:///catalog.db"', f'url = "postgresq://u:{DB_PASSWORD}@db/x"')
    )
    mistyped = shelflife("-c", str(typo), "stats", cwd=tmp_path)
    assert mistyped.returncode == 2
    assert "postgresq://u:***@db/x" in mistyped.stderr  # shown as written, password masked
    outputs.append(mistyped.stdout + mistyped.stderr)
    everything = "\n".join(outputs)
    assert '"action": "migrate"' in everything  # the JSON log line of the move
    assert "no_such_database_here" in everything  # the error names the database...
    assert SECRET_KEY not in everything  # ...but never a secret
    assert DB_PASSWORD not in everything


def test_the_log_filter_masks_registered_secrets() -> None:
    from shelflife.base.logs import JsonFormatter, RedactSecrets, register_secret

    register_secret("hunter2-is-a-secret")
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("shelflife.test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting with %s", "postgresql://u:hunter2-is-a-secret@db/app")
        try:
            raise ValueError("token hunter2-is-a-secret rejected")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "connecting with postgresql://u:***@db/app"
    assert "hunter2" not in stream.getvalue()
    assert lines[1]["level"] == "error"


def test_one_log_line_per_action_outcome(tmp_path: Path) -> None:
    from shelflife.base.logs import setup

    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    shelf = make_app_shelf(tmp_path, app, rules=[orphan_rule()])
    stored(shelf, "orphan-1.bin", "orphan-2.bin", "kept.bin", days=2)
    app.insert(REF.format("kept.bin"))
    shelf.pin("orphan-2.bin")
    stream = StringIO()
    setup("info", "json", stream)
    try:
        outcome = shelf.run()
    finally:
        setup("warning", "text")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    per_action = [line for line in lines if line["logger"] == "shelflife.actions"]
    assert [(line["outcome"], line["key"]) for line in per_action] == [
        ("done", "orphan-1.bin"),
        ("skipped", "orphan-2.bin"),
    ]
    assert per_action[0]["action"] == "delete-orphan"
    assert per_action[0]["run_id"] == outcome.run_id
    assert per_action[1]["reason"] == "pinned"
    run_lines = [line for line in lines if line["logger"] == "shelflife.runs"]
    assert run_lines[-1]["status"] == "ok"
    assert run_lines[-1]["actions"] == 1
