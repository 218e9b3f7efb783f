"""The dashboard's pages in headless Chromium against a running ``shelflife serve``: run ids
link to a run page, usage over time is an SVG chart with the watermarks, orphans are listed
largest first and paged, and /docs renders with no request leaving the machine.
Every figure on a page is checked against the API's JSON; screenshots go to the artifacts
folder (``SHELFLIFE_ARTIFACTS``, else ``.artifacts/dashboard/``)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shelflife.api.auth import hash_token, new_token
from tests.support.apps import AppTable
from tests.support.cli import SHELFLIFE
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("SHELFLIFE_ARTIFACTS", ROOT / ".artifacts")) / "dashboard"
MOVED = 55  # old referenced files the run moves: more than one page of its actions
ORPHANS = 60  # unreferenced files, each of its own size: more than one page of orphans
PAGE = 50
DAY = 86400
FIELDS = ("tier", "key", "size")  # an orphan row's data attributes


@dataclass
class Server:
    url: str
    base: Path
    token: str
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("dashboard")
    app = AppTable(f"sqlite:///{base / 'app.db'}")
    token = new_token()
    old = time.time() - 10 * DAY
    for number in range(MOVED):
        path = base / "hot" / "keep" / f"k{number:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"k" * 1000)
        os.utime(path, (old, old))
        app.insert(f"hot/keep/k{number:02d}.bin")
    for number in range(ORPHANS):  # recent: no rule acts on them
        path = base / "hot" / "loose" / f"o{number:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"o" * (100 + 7 * number))
    (base / "cold").mkdir()
    (base / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[databases.app]
url = "{app.url}"
[tiers.hot]
url = "file://hot"
ref_format = "hot/{{key}}"
capacity = "100KB"
high_watermark = "60%"
low_watermark = "40%"
[tiers.cold]
url = "file://cold"
ref_format = "cold/{{key}}"
[[references]]
database = "app"
table = "{app.name}"
column = "path"
[[rules]]
id = "age-out"
tier = "hot"
action = "migrate"
to = "cold"
after = "1d"
[[rules]]
id = "orphans"
tier = "*"
action = "collect-orphans"
grace = "30d"
[[api.tokens]]
name = "reader"
hash = "{hash_token(token)}"
scopes = ["read", "admin"]
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    process = subprocess.Popen(
        [SHELFLIFE, "serve", "--port", str(port)],
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_port(port, process, "shelflife serve")
    try:
        yield Server(f"http://127.0.0.1:{port}", base, token, process)
    finally:
        process.terminate()
        process.wait(20)
        app.dispose()


@pytest.fixture(scope="module")
def finished_run(server: Server) -> dict[str, Any]:
    """A run that moved the old files to cold, recorded with stats before and after."""
    with server.client() as client:
        assert client.get("/api/v1/plan", params={"scan": "true"}).status_code == 200
        before = client.get("/api/v1/stats/storage").json()  # stored: a point of the series
        assert before["tiers"]["hot"]["usage_ratio"] > 0.6  # above the high watermark
        started = client.post("/api/v1/runs", json={})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 120
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            record = client.get(f"/api/v1/runs/{run_id}").json()
            if record.get("status") not in (None, "running"):  # None: not recorded yet
                break
            time.sleep(0.3)
        assert record["status"] == "ok", record
        assert record["totals"]["migrate"]["objects"] == MOVED
        return record


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium whose only reachable network is this machine's loopback: every
    other host goes to a proxy on a closed port. Its performance log records each request."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are needed: scripts/test.sh installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1400")
    options.add_argument("--proxy-server=http://127.0.0.1:9")  # loopback is not proxied
    options.add_argument("--proxy-bypass-list=127.0.0.1;localhost")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(browser: Any) -> list[str]:
    """Every URL the page asked for since the log was last read."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(browser: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    return shot


def wait_for(browser: Any, css: str, timeout: float = 30) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(browser, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def cells(row: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]


# -- the pages ------------------------------------------------------------------------------


def test_run_ids_link_to_the_run_page(
    server: Server, finished_run: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    run_id = finished_run["run_id"]
    browser.get(server.url + "/")
    link = browser.find_element(By.CSS_SELECTOR, f"#runs tr[data-run='{run_id}'] a")
    link.click()
    wait_for(browser, "#run-status")
    assert urlsplit(browser.current_url).path == f"/runs/{run_id}"
    assert browser.title == f"shelflife — run {run_id}"
    assert browser.find_element(By.ID, "run-status").text == finished_run["status"]
    assert browser.find_element(By.ID, "run-trigger").text == finished_run["trigger"] == "api"
    shown = browser.find_element(By.ID, "run-duration").get_attribute("data-seconds")
    assert float(shown or -1) == finished_run["duration_seconds"]
    totals = {
        row.get_attribute("data-action"): {
            "objects": int(row.get_attribute("data-objects") or -1),
            "bytes": int(row.get_attribute("data-bytes") or -1),
        }
        for row in browser.find_elements(By.CSS_SELECTOR, "#totals tr[data-action]")
    }
    assert totals == finished_run["totals"]
    assert browser.find_element(By.ID, "failures").text == "None."
    screenshot(browser, "run")

    with server.client() as client:
        first = client.get(f"/api/v1/runs/{run_id}/actions", params={"limit": PAGE}).json()
        second = client.get(
            f"/api/v1/runs/{run_id}/actions", params={"limit": PAGE, "offset": PAGE}
        ).json()
        assert client.get("/api/v1/runs/no-such-run/actions").status_code == 404
    assert first["total"] == MOVED
    for page, expected in ((first, 1), (second, 2)):
        if expected == 2:
            browser.find_element(By.CSS_SELECTOR, ".pager a[rel='next']").click()
            wait_for(browser, "#actions")
            assert "page=2" in browser.current_url
        rows = browser.find_elements(By.CSS_SELECTOR, "#actions tr[data-key]")
        assert [row.get_attribute("data-key") for row in rows] == [
            item["key"] for item in page["actions"]
        ]
        assert {row.get_attribute("data-outcome") for row in rows} == {"done"}
        assert all(cells(row)[2] == "hot → cold" for row in rows)
    assert len(second["actions"]) == MOVED - PAGE

    browser.get(server.url + "/runs/no-such-run")
    assert "no run 'no-such-run'" in browser.find_element(By.ID, "error").text


def test_usage_over_time_is_an_svg_chart_with_the_watermarks(
    server: Server, finished_run: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    with sqlite3.connect(server.base / "catalog.db") as conn:
        bodies = [json.loads(row[0]) for row in conn.execute("SELECT body FROM stats_snapshots")]
    browser.get(server.url + "/")  # stores no point: the run's figures are fresh
    chart = browser.find_element(By.CSS_SELECTOR, "#usage figure[data-tier='hot']")
    points = chart.find_elements(By.CSS_SELECTOR, "circle.point")
    kept = [body["tiers"]["hot"] for body in bodies]
    assert len(kept) >= 2  # before and after the run
    assert [int(p.get_attribute("data-used") or -1) for p in points] == [
        figures["used_bytes"] for figures in kept
    ]
    ratios = [float(p.get_attribute("data-ratio") or -1) for p in points]
    assert ratios == pytest.approx([figures["usage_ratio"] for figures in kept], abs=1e-4)
    assert ratios[0] > 0.6 > ratios[-1]  # the run took the tier below its high watermark
    high = chart.find_element(By.CSS_SELECTOR, "line[data-watermark='high']")
    low = chart.find_element(By.CSS_SELECTOR, "line[data-watermark='low']")
    assert float(high.get_attribute("data-value") or -1) == pytest.approx(0.6)
    assert float(low.get_attribute("data-value") or -1) == pytest.approx(0.4)
    labels = [text.text for text in chart.find_elements(By.CSS_SELECTOR, "text")]
    assert "high 60%" in labels
    assert "low 40%" in labels
    # drawn where the figures are: the first point above the high line, the last below it
    high_y = float(high.get_attribute("y1") or -1)
    assert float(points[0].get_attribute("cy") or -1) < high_y
    assert float(points[-1].get_attribute("cy") or -1) > high_y
    assert high_y < float(low.get_attribute("y1") or -1)
    cold = browser.find_element(By.CSS_SELECTOR, "#usage figure[data-tier='cold']")
    assert not cold.find_elements(By.CSS_SELECTOR, "line[data-watermark]")  # no capacity
    assert "watermarks do not apply" in cold.text
    assert not browser.find_elements(By.CSS_SELECTOR, "script")  # no JavaScript at all
    screenshot(browser, "dashboard")


def test_orphans_page_lists_the_api_orphans_largest_first(
    server: Server, finished_run: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    with server.client() as client:
        listed = client.get("/api/v1/orphans", params={"limit": PAGE}).json()
        second = client.get("/api/v1/orphans", params={"limit": PAGE, "offset": PAGE}).json()
        hot = client.get("/api/v1/orphans", params={"tier": "hot", "limit": 5}).json()
        stats = client.get("/api/v1/stats/storage").json()
        unknown = client.get("/api/v1/orphans", params={"tier": "nope"})
    assert unknown.status_code == 400
    assert "declared tiers" in unknown.json()["hint"]
    expected = [f"loose/o{n:02d}.bin" for n in reversed(range(ORPHANS))]  # by size
    assert [o["key"] for o in listed["orphans"] + second["orphans"]] == expected
    assert listed["total"] == ORPHANS
    # the same orphans the stats count
    assert listed["tiers"]["hot"]["orphan_objects"] == stats["tiers"]["hot"]["orphan_objects"]
    assert listed["tiers"]["hot"]["orphan_bytes"] == stats["tiers"]["hot"]["orphan_bytes"]
    assert [o["key"] for o in hot["orphans"]] == expected[:5]

    browser.get(server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "nav a[href='/orphans']").click()
    wait_for(browser, "#orphans")
    for page in (listed, second):
        rows = browser.find_elements(By.CSS_SELECTOR, "#orphans tr[data-key]")
        shown = [
            (
                row.get_attribute("data-tier"),
                row.get_attribute("data-key"),
                row.get_attribute("data-size"),
            )
            for row in rows
        ]
        assert shown == [(o["tier"], o["key"], str(o["size"])) for o in page["orphans"]]
        assert all(cells(row)[3].endswith(" s") or "min" in cells(row)[3] for row in rows)
        if page is listed:
            screenshot(browser, "orphans")
            browser.find_element(By.CSS_SELECTOR, ".pager a[rel='next']").click()
            wait_for(browser, "#orphans")
    totals = browser.find_element(By.CSS_SELECTOR, "#orphan-tiers tr[data-tier='hot']")
    assert totals.get_attribute("data-objects") == str(ORPHANS)

    browser.get(server.url + "/")  # a tier's orphan count links to its orphans
    browser.find_element(By.CSS_SELECTOR, "#tiers tr[data-tier='hot'] td.orphans a").click()
    wait_for(browser, "#orphans")
    assert "tier=hot" in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#orphans tr[data-key]")
    assert [row.get_attribute("data-key") for row in rows] == expected[:PAGE]

    browser.get(server.url + "/orphans?tier=cold")
    assert browser.find_element(By.ID, "orphans").text == "No orphans."
    browser.get(server.url + "/orphans?tier=nope")
    assert "no tier 'nope'" in browser.find_element(By.ID, "error").text


def test_docs_render_with_no_request_leaving_the_machine(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    origin = urlsplit(server.url).netloc
    requested_urls(browser)  # drop what earlier pages asked for
    browser.get(server.url + "/docs")
    operation = wait_for(browser, ".opblock-summary-path[data-path='/api/v1/objects']")
    assert operation.is_displayed()
    assert browser.find_elements(
        By.CSS_SELECTOR, ".opblock-summary-path[data-path='/api/v1/orphans']"
    )
    screenshot(browser, "docs")
    urls = requested_urls(browser)
    assert any(url.endswith("/openapi.json") for url in urls)
    assert {urlsplit(url).netloc for url in urls if not url.startswith("data:")} == {origin}

    with server.client() as client:  # ReDoc's bundle loads its logo from the vendor's site
        assert client.get("/redoc").status_code == 404


# -- the orphans listed are the ones gc would sweep ----------------------------------------------


@pytest.mark.parametrize("marking", ["auto", "snapshot"])
def test_the_orphans_listed_are_those_gc_plans_to_sweep(tmp_path: Path, marking: str) -> None:
    """With no grace, a collect-orphans plan takes exactly the orphans the page lists (a
    key named on a tier that lacks it protects the object on the other tier), by merge and
    by snapshot alike; a pinned orphan is listed, flagged, and not planned."""
    from shelflife import Shelf
    from shelflife.base.units import utcnow
    from shelflife.config import parse_config
    from shelflife.service.browse import find_orphans

    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    for tier, names in {"a": ["x", "y", "z", "named-on-b"], "b": ["p", "q"]}.items():
        for number, name in enumerate(names):
            path = tmp_path / tier / f"{name}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"." * (10 + number))
    app.insert("a/y.bin", "b/named-on-b.bin", "b/p.bin")
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "databases": {"app": {"url": app.url}},
        "tiers": {
            name: {"url": f"file://{tmp_path / name}", "ref_format": f"{name}/{{key}}"}
            for name in ("a", "b")
        },
        "references": [{"database": "app", "table": app.name, "column": "path"}],
        "rules": [
            {
                "id": "orphans",
                "tier": "*",
                "action": "collect-orphans",
                "grace": "0s",
                "max_fraction": "100%",  # a test tier of a few objects
            }
        ],
        "executor": {"marking": marking},
    }
    try:
        with Shelf.open(parse_config(raw, base_dir=tmp_path, source="t", env={})) as shelf:
            shelf.scan()
            shelf.pin("a/z.bin")
            found = find_orphans(shelf.context, utcnow(), tier=None, limit=50, offset=0)
            listed = {(o.tier, o.key) for o in found.items}
            assert listed == {("a", "x.bin"), ("a", "z.bin"), ("b", "q.bin")}
            assert [o.key for o in found.items if o.pinned] == ["z.bin"]
            assert found.marking == ("snapshot" if marking == "snapshot" else "merge")
            plan = shelf.plan(scan=False)
            swept = {(a.tier, a.key) for a in plan.iter_actions() if a.rule == "orphans"}
            assert swept == listed - {("a", "z.bin")}
            only_b = find_orphans(shelf.context, utcnow(), tier="b", limit=1, offset=0)
            assert [o.key for o in only_b.items] == ["q.bin"]
            assert only_b.tiers == {"b": (1, 11)}
    finally:
        app.dispose()


# -- the orphans listing: told once per minute, bounded whatever the offset ------------------


@pytest.fixture
def orphan_shelf(tmp_path: Path) -> Iterator[Any]:
    """Tier a: four orphans (sizes 10..13) and one referenced file; tier b: two orphans."""
    from shelflife import Shelf
    from shelflife.config import parse_config

    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    for tier, names in {"a": ["w", "x", "y", "z", "kept"], "b": ["p", "q"]}.items():
        for number, name in enumerate(names):
            path = tmp_path / tier / f"{name}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"." * (10 + number))
    app.insert("a/kept.bin")
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "databases": {"app": {"url": app.url}},
        "tiers": {
            name: {"url": f"file://{tmp_path / name}", "ref_format": f"{name}/{{key}}"}
            for name in ("a", "b")
        },
        "references": [{"database": "app", "table": app.name, "column": "path"}],
    }
    try:
        with Shelf.open(parse_config(raw, base_dir=tmp_path, source="t", env={})) as shelf:
            shelf.scan()
            yield shelf
    finally:
        app.dispose()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def counting_listings(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The tiers of every listing told from now on (the real listing, counted)."""
    from shelflife.service import browse

    told: list[str | None] = []
    real = browse.list_orphans

    def counted(context: Any, now: Any, *, tier: str | None, keep: int) -> browse.OrphanList:
        told.append(tier)
        return real(context, now, tier=tier, keep=keep)

    monkeypatch.setattr(browse, "list_orphans", counted)
    return told


def test_one_listing_serves_every_page_until_it_expires(
    orphan_shelf: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shelflife.base.units import utcnow
    from shelflife.service.browse import OrphanFinder

    told = counting_listings(monkeypatch)
    clock = Clock()
    finder = OrphanFinder(orphan_shelf.context, ttl=60, clock=clock)
    pages = [
        finder.page(utcnow(), tier=None, limit=limit, offset=offset)
        for limit in (1, 2, 3)
        for offset in range(8)
    ]
    assert told == [None]  # 24 distinct pages, the references read once
    assert [o.key for o in pages[0].items + pages[1].items + pages[2].items] == [
        "z.bin",
        "y.bin",
        "x.bin",  # ties by tier: a's 11 bytes before b's
    ]
    assert all(page.total == 6 for page in pages)

    (tmp_path / "b" / "new.bin").write_bytes(b"." * 100)
    orphan_shelf.scan()
    clock.value += 59
    assert finder.page(utcnow(), tier=None, limit=1, offset=0).total == 6  # still reused
    clock.value += 1
    fresh = finder.page(utcnow(), tier=None, limit=1, offset=0)
    assert told == [None, None]
    assert (fresh.total, [o.key for o in fresh.items]) == (7, ["new.bin"])


def test_expired_listings_are_dropped(orphan_shelf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from shelflife.base.units import utcnow
    from shelflife.service.browse import OrphanFinder

    told = counting_listings(monkeypatch)
    clock = Clock()
    finder = OrphanFinder(orphan_shelf.context, ttl=60, clock=clock)
    for tier in ("a", "b", None, "a", "b", None):
        for offset in range(3):
            finder.page(utcnow(), tier=tier, limit=1, offset=offset)
    assert (finder.held, told) == (3, ["a", "b", None])  # one listing per tier asked
    clock.value += 60
    finder.page(utcnow(), tier="b", limit=1, offset=0)
    assert (finder.held, told) == (1, ["a", "b", None, "b"])


def test_the_listing_holds_at_most_its_capacity_and_says_there_are_more(
    orphan_shelf: Any,
) -> None:
    from shelflife.api.dashboard import render_orphans
    from shelflife.base.units import utcnow
    from shelflife.errors import UsageError
    from shelflife.service.browse import ORPHANS_KEPT, OrphanFinder, find_orphans, list_orphans

    assert ORPHANS_KEPT == 10_000
    listing = list_orphans(orphan_shelf.context, utcnow(), tier=None, keep=3)
    assert [o.key for o in listing.ordered] == ["z.bin", "y.bin", "x.bin"]  # held: 3 of 6
    assert (listing.total, listing.truncated) == (6, True)
    assert listing.tiers == {"a": (4, 10 + 11 + 12 + 13), "b": (2, 21)}

    finder = OrphanFinder(orphan_shelf.context, keep=3)
    first = finder.page(utcnow(), tier=None, limit=50, offset=0)
    assert (len(first.items), first.listed, first.total, first.truncated) == (3, 3, 6, True)
    body = first.as_json()
    assert (body["truncated"], body["listed"], body["listed_limit"], body["total"]) == (
        True,
        3,
        3,
        6,
    )
    assert [
        o["key"] for o in finder.page(utcnow(), tier=None, limit=2, offset=2).as_json()["orphans"]
    ] == ["x.bin"]
    html = render_orphans(first, None, ["a", "b"])
    assert "id='orphans-truncated' data-listed='3' data-total='6'" in html
    assert "The largest 3 of 6 orphans are listed" in html
    assert "page 1 of 1" in html  # the pager pages through what is listed

    for past in (3, 4, 10**7):  # refused, not listed deeper
        with pytest.raises(UsageError) as refused:
            finder.page(utcnow(), tier=None, limit=1, offset=past)
        assert "only the largest 3 are kept in order" in refused.value.message
        assert "offset below 3" in str(refused.value.hint)
        with pytest.raises(UsageError):
            find_orphans(orphan_shelf.context, utcnow(), tier=None, limit=1, offset=past, keep=3)

    whole = finder.page(utcnow(), tier="b", limit=50, offset=0)  # fewer than kept: all
    assert (whole.listed, whole.total, whole.truncated) == (2, 2, False)
    assert "orphans-truncated" not in render_orphans(whole, "b", ["a", "b"])


def test_an_offset_past_the_listing_is_refused_over_http(server: Server) -> None:
    with server.client() as client:
        api = client.get("/api/v1/orphans", params={"offset": 10_000})
        last = client.get("/api/v1/orphans", params={"offset": 9_999})
        page = client.get("/orphans", params={"page": 201})
        deepest = client.get("/orphans", params={"page": 200})
    assert api.status_code == 400
    assert "only the largest 10,000 are kept in order" in api.json()["message"]
    assert "offset below 10,000" in api.json()["hint"]
    assert last.status_code == 200
    assert (last.json()["orphans"], last.json()["truncated"]) == ([], False)
    assert page.status_code == 400
    assert "page 201 is past the orphans listed" in page.text
    assert "200 pages of 50" in page.text
    assert deepest.status_code == 200


# -- the cost of the next plan -------------------------------------------------------------


def test_the_plan_cost_shown_is_the_apis(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    token = new_token()
    old = time.time() - 10 * DAY
    for number in range(3):
        path = tmp_path / "hot" / f"f{number}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"f" * 1024**2)
        os.utime(path, (old, old))
    (tmp_path / "cold").mkdir()
    (tmp_path / "shelflife.toml").write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[tiers.hot]
url = "file://hot"
cost = {{ gb_month = 1024, per_1k_get = 500 }}
[tiers.cold]
url = "file://cold"
cost = {{ gb_month = 256, per_1k_put = 1000 }}
[[rules]]
id = "age-out"
tier = "hot"
action = "migrate"
to = "cold"
after = "1d"
[[api.tokens]]
name = "reader"
hash = "{hash_token(token)}"
scopes = ["read"]
[api]
public_dashboard = true
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}
    process = subprocess.Popen(
        [SHELFLIFE, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process, "shelflife serve")
        url = f"http://127.0.0.1:{port}"
        # the API's plan first (it scans); the page then plans on the same inventory
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            plan = client.get("/api/v1/plan", params={"scan": "true"})
        assert plan.status_code == 200, plan.text
        cost = plan.json()["cost"]
        # 3 x (a GET 0.5 + a PUT 1) once; 3 MiB at 0.25 instead of 1 a month
        assert cost["total"]["one_off"] == pytest.approx(4.5)
        assert cost["total"]["monthly_change"] == pytest.approx(-2.25)
        browser.get(url + "/")
        total = wait_for(browser, "#plan-cost-total")
        assert float(total.get_attribute("data-one-off") or -1) == cost["total"]["one_off"]
        assert float(total.get_attribute("data-monthly") or 0) == cost["total"]["monthly_change"]
        assert cells(total) == ["total", "4.50", "4.50", "0.00", "0.00", "-2.25", "2.0 months"]
        row = browser.find_element(By.CSS_SELECTOR, "#plan-cost tr[data-rule='age-out']")
        assert float(row.get_attribute("data-one-off") or -1) == cost["rules"]["age-out"]["one_off"]
        screenshot(browser, "plan-cost")
    finally:
        process.terminate()
        process.wait(20)
