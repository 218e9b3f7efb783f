"""The application database goes away mid-run (PostgreSQL behind a TCP proxy that is cut).

At a chosen step of a chosen batch the proxy drops every connection and refuses new ones.
The run must stop there — status ``partial``, the reason recorded — without deleting
anything whose references it could not verify; with the database back, ``recover`` and
the next run finish the work. Rows are read straight from PostgreSQL, not through the
proxy, to check that every one still names its original bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from shelflife import Shelf
from shelflife.base.faults import hooked
from shelflife.base.units import utcnow
from shelflife.config import parse_config
from tests.support.apps import AppTable
from tests.support.faultproxy import FaultProxy
from tests.support.figures import Figures

pytestmark = pytest.mark.postgres

PER_KIND = 50
BATCH = 10


def content(key: str) -> bytes:
    return key.encode() * (50 + sum(key.encode()) % 200)


@pytest.fixture
def db_proxy(pg_url: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(make_url(pg_url).port or 5432, http=False).start()
    yield proxy
    proxy.stop()


MAKE = {"create": True}  # the tiers' folders are made as objects are written


class World:
    def __init__(self, tmp_path: Path, pg_url: str, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.direct = AppTable(pg_url)
        through = make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
        self.hot, self.cold = tmp_path / "hot", tmp_path / "cold"
        raw: dict[str, Any] = {
            "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
            "tiers": {
                "hot": {"url": f"file://{self.hot}", "ref_format": "/data/hot/{key}", **MAKE},
                "cold": {"url": f"file://{self.cold}", "ref_format": "/data/cold/{key}", **MAKE},
            },
            "databases": {"app": {"url": through.render_as_string(hide_password=False)}},
            "references": [
                {"database": "app", "table": self.direct.name, "column": "path",
                 "on_expire": "null"}
            ],
            "executor": {"batch_size": BATCH, "max_error_fraction": 1.0},
            "rules": [
                {"id": "migrate", "tier": "hot", "action": "migrate", "to": "cold",
                 "after": "0s", "filter": {"prefix": "m/"}},
                {"id": "expire", "tier": "hot", "action": "expire", "after": "0s",
                 "filter": {"prefix": "e/"}},
                {"id": "collect", "tier": "hot", "action": "collect-orphans", "grace": "0s",
                 "max_fraction": 1.0, "filter": {"prefix": "o/"}},
            ],
        }  # fmt: skip
        self.shelf = Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))
        for kind in "meo":
            for i in range(PER_KIND):
                key = f"{kind}/{i:03}"
                stored = self.shelf.put(content(key), key, tier="hot")
                if kind != "o":
                    self.direct.insert(stored.ref)
        self.shelf.ledger.purge_expired_leases(utcnow().replace(year=utcnow().year + 1))

    def file(self, ref: str) -> bytes | None:
        tier, key = ref.removeprefix("/data/").split("/", 1)
        path = (self.hot if tier == "hot" else self.cold) / key
        return path.read_bytes() if path.exists() else None

    def check(self) -> None:
        """Every row (read directly) names a file holding that key's bytes."""
        for ref in self.direct.values():
            if ref == "None":
                continue
            key = ref.split("/", 3)[3]
            assert self.file(ref) == content(key), f"row {ref} lost its bytes"

    def present(self, kind: str) -> int:
        return sum(1 for i in range(PER_KIND) if (self.hot / f"{kind}/{i:03}").exists())


CASES = [
    # rule, checkpoint where the database goes, which pass of it (the batch)
    ("migrate", "journal-repointing", 3),
    ("expire", "expire-rows", 2),
    ("collect", "sweep-batch", 2),
]


@pytest.mark.invariant("I1", "I2", "I3")
@pytest.mark.parametrize(("rule", "where", "batch"), CASES)
def test_database_outage_mid_run(
    tmp_path: Path,
    pg_url: str,
    db_proxy: FaultProxy,
    figures: Figures,
    rule: str,
    where: str,
    batch: int,
) -> None:
    """The application database vanishes mid-run: the run stops partial, nothing is
    deleted on references it could not verify, recover and the next run finish."""
    world = World(tmp_path, pg_url, db_proxy)
    with hooked(where, db_proxy.down, at=batch):
        outcome = world.shelf.run(rule=rule, yes=True)
    assert outcome.status == "partial", outcome.as_json()
    assert outcome.stopped is not None
    assert "cannot" in outcome.stopped, outcome.stopped
    assert world.shelf.runs(limit=1)[0].status == "partial"
    done = BATCH * (batch - 1)  # the batches before the outage went through
    assert len(outcome.actions) == done
    world.check()
    if rule == "migrate":
        # The cut batch was copied and verified, its rows not (all) repointed: every source
        # is still there, and the batches after it were never started.
        assert world.present("m") == PER_KIND - done
    elif rule == "expire":
        assert world.present("e") == PER_KIND - done  # rows nulled, objects kept
    else:
        assert world.present("o") == PER_KIND - done
    db_proxy.up()
    recovered = world.shelf.recover()
    if rule == "migrate":
        assert recovered == {"completed": BATCH}
        assert world.present("m") == PER_KIND - done - BATCH
    world.check()
    final = world.shelf.run(rule=rule, yes=True)
    assert final.status == "ok", final.as_json()
    assert not world.shelf.run(rule=rule, dry_run=True).plan.actions
    world.check()
    kind = rule[0]
    assert world.present(kind) == 0
    values = world.direct.values()
    if rule == "migrate":
        assert sum(v.startswith("/data/cold/m/") for v in values) == PER_KIND
    if rule == "expire":
        assert values.count("None") == PER_KIND
    figures.add("database outage mid-run", outages=1, runs_stopped=1, lost=0, dangling=0)
