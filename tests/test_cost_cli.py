"""The cost of a plan as a user sees it: ``shelflife plan`` (text and ``--json``) on
``file://`` tiers with prices of their own, kept with the saved plan that ``apply``
applies, and a plan to S3 GLACIER on the S3 server with the table's prices, warned
against for its many small objects."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import shelflife
from tests.support.servers import make_s3_bucket, s3_client, s3_tier

MIB = 1024**2
GIB = 1024**3
DAY = 86400


def toml_table(values: dict[str, Any]) -> str:
    lines = (f"{k} = {json.dumps(v) if isinstance(v, str) else v}" for k, v in values.items())
    return "\n".join(lines)


@pytest.fixture
def priced(tmp_path: Path) -> Path:
    """Two file:// tiers with round prices: a MiB costs 1 a month on hot, 0.25 on cold."""
    old = time.time() - 10 * DAY
    files = {
        "big/a.bin": 2 * MIB,
        "big/b.bin": 2 * MIB,
        "big/c.bin": 2 * MIB,
        "big/small.bin": 1000,
        "tmp/x.log": MIB,
    }
    for key, size in files.items():
        path = tmp_path / "hot" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        os.utime(path, (old, old))
    (tmp_path / "cold").mkdir()
    (tmp_path / "shelflife.toml").write_text("""
[catalog]
url = "sqlite:///catalog.db"
[tiers.hot]
url = "file://hot"
[tiers.hot.cost]
gb_month = 1024       # 1 per MiB-month
per_1k_get = 500      # 0.5 per GET
min_days = 30
[tiers.cold]
url = "file://cold"
[tiers.cold.cost]
gb_month = 256        # 0.25 per MiB-month
per_1k_put = 1000     # 1 per PUT
min_days = 30
min_object_size = "1MiB"
[[rules]]
id = "scratch"
tier = "hot"
action = "expire"
after = "5d"
filter = { prefix = "tmp/" }
[[rules]]
id = "archive"
tier = "hot"
action = "migrate"
to = "cold"
after = "1d"
filter = { prefix = "big/" }
""")
    return tmp_path


def test_plan_shows_the_cost_per_rule_and_in_total(priced: Path) -> None:
    result = shelflife("plan", "--json", cwd=priced)
    assert result.returncode == 0, result.stderr
    cost = json.loads(result.stdout)["cost"]
    archive, scratch = cost["rules"]["archive"], cost["rules"]["scratch"]
    small = 1000 / MIB  # the 1000-byte file, in MiB
    # 4 objects moved: a GET on hot (0.5) and a PUT on cold (1) each
    assert archive["requests"] == pytest.approx(6.0)
    assert archive["retrieval"] == 0
    # the files arrived on hot just now (their ctime; their mtime is 10 days old, which
    # makes them old enough for the rules): hot's 30 days of what leaves it are due
    assert archive["early_deletion"] == pytest.approx(6 + small, rel=1e-4)
    assert archive["one_off"] == pytest.approx(6 + 6 + small, rel=1e-4)
    # cold bills 6 MiB + 1 MiB (the small file at its min_object_size) at 0.25; hot saves
    assert archive["monthly_change"] == pytest.approx(7 * 0.25 - (6 + small), abs=1e-6)
    assert archive["payback_months"] == pytest.approx(12.000954 / 4.250954, abs=0.01)
    assert (archive["objects"], archive["small_objects"], archive["to"]) == (4, 1, "cold")
    # 2.8 months is longer than cold's 30-day minimum
    assert archive["warnings"] == [
        "rule archive: moving 4 objects to cold costs 12.00 once and saves 4.25 a month: "
        "it pays back in 2.8 months, longer than tier cold's min_days (30)"
    ]
    # the expired 1 MiB file: hot's 30 days are due, its storage saved
    assert scratch["requests"] == 0
    assert scratch["early_deletion"] == pytest.approx(1.0, rel=1e-4)
    assert scratch["monthly_change"] == pytest.approx(-1.0)
    assert "deleted before their tier's min_days" in scratch["warnings"][0]
    total = cost["total"]
    assert total["one_off"] == pytest.approx(archive["one_off"] + scratch["one_off"], abs=1e-5)
    assert total["monthly_change"] == pytest.approx(-5.250954, abs=1e-5)
    assert cost["tiers"]["hot"]["source"] == "config over file:// (free unless set)"
    assert cost["warnings"] == scratch["warnings"] + archive["warnings"]  # in rule order

    text = shelflife("plan", cwd=priced)
    assert text.returncode == 0, text.stderr
    assert "cost (price units" in text.stdout
    for figure in ("12.00", "-4.25", "2.8 months"):
        assert figure in text.stdout
    assert "warning: cost: rule archive: moving 4 objects" in text.stderr


def test_a_saved_plan_and_its_run_keep_the_cost_that_was_reviewed(priced: Path) -> None:
    planned = shelflife("plan", "--json", "-o", "plan.json", cwd=priced)
    assert planned.returncode == 0, planned.stderr
    body = json.loads(planned.stdout)
    assert json.loads((priced / "plan.json").read_text())["cost"] == body["cost"]
    # the prices change after review: the saved plan still says what was reviewed
    config = priced / "shelflife.toml"
    config.write_text(config.read_text().replace("per_1k_put = 1000", "per_1k_put = 0"))
    applied = shelflife("apply", body["plan_id"], "--yes", "--json", cwd=priced)
    assert applied.returncode == 0, applied.stderr
    run = json.loads(applied.stdout)
    assert run["status"] == "ok"
    assert run["cost"] == body["cost"]
    assert (priced / "cold" / "big" / "a.bin").exists()


@pytest.mark.s3
def test_many_small_objects_to_glacier_are_warned_against(tmp_path: Path, s3_endpoint: str) -> None:
    bucket = make_s3_bucket(s3_endpoint)
    client = s3_client(s3_endpoint)
    for number in range(200):
        client.put_object(Bucket=bucket, Key=f"hot/logs/{number:03d}.log", Body=b"l" * 1024)
    hot = toml_table(s3_tier(s3_endpoint, bucket, "hot"))
    cold = toml_table(s3_tier(s3_endpoint, bucket, "cold", storage_class="GLACIER"))
    (tmp_path / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[tiers.hot]
{hot}
[tiers.cold]
{cold}
[[rules]]
id = "archive-logs"
tier = "hot"
action = "migrate"
to = "cold"
after = "7d"
""")
    later = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    result = shelflife("plan", "--json", "--at", later, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["totals"]["migrate"]["objects"] == 200
    cost = body["cost"]
    assert cost["tiers"]["hot"]["source"] == "table: s3:// STANDARD"
    assert cost["tiers"]["cold"]["source"] == "table: s3:// GLACIER"
    rule = cost["rules"]["archive-logs"]
    # a GET on STANDARD (0.0004/1000) and a PUT to GLACIER (0.03/1000) per object
    assert rule["requests"] == pytest.approx(200 * 0.0304 / 1000)
    assert rule["retrieval"] == 0
    assert rule["early_deletion"] == 0
    # each 1 KiB object is billed 40 KiB on GLACIER: it costs more there than on STANDARD
    monthly = 200 * (40 * 1024 * 0.0036 - 1024 * 0.023) / GIB
    assert rule["monthly_change"] == pytest.approx(monthly, abs=1e-6)
    assert rule["monthly_change"] > 0
    assert rule["payback_months"] is None
    assert cost["total"]["one_off"] == pytest.approx(0.00608)
    assert len(rule["warnings"]) == 2
    assert "costs more than it saves" in rule["warnings"][0]
    assert rule["warnings"][1] == (
        "rule archive-logs: 200 of 200 objects (100%) are smaller than tier cold's "
        "min_object_size (40 KiB) and are billed as that size"
    )
    assert cost["warnings"] == rule["warnings"]
