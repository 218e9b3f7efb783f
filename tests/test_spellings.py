"""References as applications store them (DESIGN I1, I3): mixed spellings refuse
collection, values of every kind protect their objects, are found by audit, released by
``listen`` and rewritten by migration; undeclared columns stop collection; bare keys on
several tiers. Real SQLite, PostgreSQL and MariaDB; the S3 server where a store matters."""

from __future__ import annotations

import json
import re
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, Text, create_engine, select
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shelflife import Shelf
from shelflife.config import parse_config
from shelflife.references.listen import listen
from tests.support.apps import AppTable, make_app_shelf, wait_for_triggers
from tests.support.cli import shelflife
from tests.support.figures import Figures
from tests.support.servers import s3_tier

# -- mixed spellings ---------------------------------------------------------------------------

WRONG = {
    "s3a": "s3a://{bucket}/{prefix}{key}",
    "upper-case scheme": "S3://{bucket}/{prefix}{key}",
    "virtual-hosted URL": "https://{bucket}.s3.amazonaws.com/{prefix}{key}",
}
OBJECTS = 100
RIGHT = 80


def write_toml(path: Path, body: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps(body), encoding="utf-8")


class Mixed:
    """100 objects on one tier; 80 rows in its spelling, ``wrong`` rows in another."""

    def __init__(self, tmp_path: Path, tier: dict[str, Any], place: str, wrong: int) -> None:
        self.tmp_path = tmp_path
        self.place = place  # 'bucket' or 'bucket/prefix' as the spellings write it
        self.app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
        self.tier = tier
        self.wrong = wrong
        self.config = tmp_path / "shelflife.toml"
        self.keys = [f"iq/{n:03d} capture.bin" for n in range(OBJECTS)]

    def write(self, aliases: list[str] | None = None) -> None:
        tier = {**self.tier, "ref_format": f"s3://{self.place}/{{key}}"}
        if aliases:
            tier["ref_aliases"] = aliases
        write_toml(
            self.config,
            {
                "catalog": {"url": "sqlite:///catalog.db"},
                "databases": {"app": {"url": self.app.url}},
                "tiers": {"iq": tier},
                "references": [{"database": "app", "table": self.app.name, "column": "path"}],
                "rules": [
                    {
                        "id": "orphans",
                        "tier": "iq",
                        "action": "collect-orphans",
                        "grace": "0s",
                        "max_fraction": 1.0,
                    }
                ],
            },
        )

    def fill(self, spelling: str, shelf: Shelf) -> None:
        for key in self.keys:
            shelf.put(key.encode(), key, tier="iq")
        shelf.ledger.purge_expired_leases(shelf_later())
        rows = [f"s3://{self.place}/{key}" for key in self.keys[:RIGHT]]
        bucket, _, prefix = self.place.partition("/")
        rows += [
            spelling.format(bucket=bucket, prefix=prefix + "/" if prefix else "", key=key)
            for key in self.keys[RIGHT : RIGHT + self.wrong]
        ]
        self.app.insert(*rows)

    @property
    def true_orphans(self) -> list[str]:
        return self.keys[RIGHT + self.wrong :]

    def run(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = shelflife("-c", str(self.config), *args, "--json", cwd=self.tmp_path)
        return result.returncode, json.loads(result.stdout)


def shelf_later() -> Any:
    from datetime import timedelta

    from shelflife.base.units import utcnow

    return utcnow() + timedelta(days=365)


def stored_keys(shelf: Shelf) -> set[str]:
    return {info.key for _, info in shelf.ls(tier="iq")}


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], str]:
    if request.param == "file":
        return {"create": True, "url": f"file://{tmp_path / 'store'}"}, "iq-bucket"
    endpoint = request.getfixturevalue("s3_endpoint")
    from tests.support.servers import make_s3_bucket

    bucket = make_s3_bucket(endpoint)
    tier = s3_tier(endpoint, bucket, prefix="pre")
    del tier["ref_format"]
    return tier, f"{bucket}/pre"


@pytest.mark.invariant("I1", "I3")
@pytest.mark.parametrize("share", [15, 3])
@pytest.mark.parametrize("spelling", sorted(WRONG))
def test_mixed_spellings_refuse_collection_until_the_alias_is_declared(
    tmp_path: Path,
    backend: tuple[dict[str, Any], str],
    spelling: str,
    share: int,
    figures: Figures,
) -> None:
    tier, place = backend
    world = Mixed(tmp_path, tier, place, wrong=share)
    world.write()
    with Shelf.open(world.config) as shelf:
        world.fill(WRONG[spelling], shelf)
        before = stored_keys(shelf)
    assert len(before) == OBJECTS

    code, dry = world.run("run", "--dry-run")
    assert code == 3
    assert dry["actions"] == []
    (refusal,) = dry["refusals"]
    assert refusal["tier"] == "iq"
    assert f"{share} value(s)" in refusal["reason"]
    code, plan = world.run("plan")
    assert plan["refusals"] == dry["refusals"]
    assert plan["actions"] == []
    code, run = world.run("run")
    assert (code, run["status"]) == (3, "refused")
    assert run["actions"] == []
    code, _ = world.run("gc")
    assert code == 3
    with Shelf.open(world.config) as shelf:
        assert stored_keys(shelf) == before  # nothing deleted

    # The refusal names the alias to add; with it, exactly the true orphans go.
    alias = re.search(r'ref_aliases = \["([^"]+)"\]', refusal["reason"])
    assert alias is not None, refusal["reason"]
    world.write(aliases=[alias.group(1)])
    code, run = world.run("run")
    assert (code, run["status"]) == (0, "ok"), run
    assert sorted(a["key"] for a in run["actions"]) == world.true_orphans
    with Shelf.open(world.config) as shelf:
        assert stored_keys(shelf) == before - set(world.true_orphans)
    figures.add("spellings", refused_runs=4, objects_kept=OBJECTS - len(world.true_orphans))


@pytest.mark.invariant("I3")
def test_a_small_share_of_unreadable_values_is_tolerated_a_large_one_refused(
    tmp_path: Path,
) -> None:
    world = Mixed(
        tmp_path, {"create": True, "url": f"file://{tmp_path / 'store'}"}, "iq-bucket", wrong=0
    )
    world.write()
    with Shelf.open(world.config) as shelf:
        world.fill("", shelf)
    world.app.insert("n/a")  # 1 of 81 values (1.2 %): above the default 1 %
    code, dry = world.run("run", "--dry-run")
    assert code == 3
    assert "above its max_unmatched of 1.0%" in dry["refusals"][0]["reason"]
    body = tomllib.loads(world.config.read_text())
    body["references"][0]["max_unmatched"] = "5%"
    write_toml(world.config, body)
    code, dry = world.run("run", "--dry-run")
    assert code == 0
    assert sorted(a["key"] for a in dry["actions"]) == world.keys[RIGHT:]


# -- values in the forms applications use --------------------------------------------------------

CDN = "https://cdn.example.com/"


class Posts:
    """A ``posts`` table whose columns hold references in every supported form."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.name = f"posts_{uuid.uuid4().hex[:8]}"
        metadata = MetaData()
        columns = [
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("cover", String(500)),
            Column("signed", String(1000)),
            Column("media", JSONB if self.postgres else JSON),
            Column("body", Text),
        ]
        if self.postgres:
            columns.append(Column("gallery", ARRAY(Text)))
        self.table = Table(self.name, metadata, *columns)
        metadata.create_all(self.engine)
        self.tmp_path = tmp_path

    def keys(self, i: int) -> list[str]:
        keys = [
            f"covers/c {i}.jpg",
            f"signed/s{i}.jpg",
            f"media/m{i}.mp4",
            f"media/thumbs/t{i}.jpg",
            f"docs/d{i}.png",
            f"docs/e{i} x.png",
        ]
        return keys + ([f"gallery/g{i}.jpg"] if self.postgres else [])

    def row(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": i,
            "cover": f"{CDN}covers/c%20{i}.jpg",
            "signed": f"{CDN}signed/s{i}.jpg?X-Amz-Expires=3600&X-Amz-Signature=f00",
            "media": {
                "video": {"src": f"{CDN}media/m{i}.mp4"},
                "thumbs": [f"{CDN}media/thumbs/t{i}.jpg"],
                "title": "Clip",
            },
            "body": (
                f"# Post {i}\n![diagram]({CDN}docs/d{i}.png) and "
                f'<img alt="e" src="{CDN}docs/e{i}%20x.png">.'
            ),
        }
        if self.postgres:
            row["gallery"] = ["https://elsewhere.example.org/logo.png", f"{CDN}gallery/g{i}.jpg"]
        return row

    def insert(self, *ids: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [self.row(i) for i in ids])

    def delete(self, i: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.id == i))

    def values(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(self.table))]

    def references(self) -> list[dict[str, Any]]:
        refs: list[dict[str, Any]] = [
            {"database": "app", "table": self.name, "column": "cover"},
            {"database": "app", "table": self.name, "column": "signed"},
            {"database": "app", "table": self.name, "column": "media", "kind": "json"},
            {"database": "app", "table": self.name, "column": "body", "kind": "text"},
        ]
        if self.postgres:
            # half the gallery's links point elsewhere: said so, they do not refuse anything
            refs.append(
                {
                    "database": "app",
                    "table": self.name,
                    "column": "gallery",
                    "kind": "array",
                    "max_unmatched": "50%",
                }
            )
        return refs


def cdn_shelf(
    tmp_path: Path, url: str, references: list[dict[str, Any]], rules: list[dict[str, Any]]
) -> Shelf:
    """A ``local`` tier spelled as CDN URLs and a ``cloud`` tier spelled as s3:// URIs."""
    raw = {
        "catalog": {"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        "databases": {"app": {"url": url}},
        "tiers": {
            "local": {
                "create": True,
                "url": f"file://{tmp_path / 'cdn'}",
                "ref_format": CDN + "{key}",
            },
            "cloud": {
                "create": True,
                "url": f"file://{tmp_path / 'cold'}",
                "ref_format": "s3://cold-bucket/{key}",
            },
        },
        "references": references,
        "rules": rules,
    }
    return Shelf.open(parse_config(raw, base_dir=tmp_path, source="test", env={}))


def posts_shelf(tmp_path: Path, posts: Posts, rules: list[dict[str, Any]]) -> Shelf:
    return cdn_shelf(tmp_path, posts.url, posts.references(), rules)


COLLECT = {
    "id": "orphans",
    "tier": "*",
    "action": "collect-orphans",
    "grace": "0s",
    "max_fraction": 1.0,
}
MIGRATE = {"id": "cold", "tier": "local", "action": "migrate", "to": "cloud", "after": "0s"}


@pytest.fixture
def posts(app_db_url: str, tmp_path: Path) -> Iterator[Posts]:
    table = Posts(app_db_url, tmp_path)
    yield table
    table.engine.dispose()


def fill(shelf: Shelf, posts: Posts, *ids: int) -> list[str]:
    """Objects for the rows ``ids`` and two orphans; returns every referenced key."""
    keys = [key for i in ids for key in posts.keys(i)]
    for key in [*keys, "orphans/o1.bin", "orphans/o 2.bin"]:
        shelf.put(key.encode(), key)
    shelf.ledger.purge_expired_leases(shelf_later())
    posts.insert(*ids)
    return keys


@pytest.mark.invariant("I1", "I3")
def test_every_form_protects_its_objects_from_collection(
    tmp_path: Path, posts: Posts, figures: Figures
) -> None:
    with posts_shelf(tmp_path, posts, [COLLECT]) as shelf:
        keys = fill(shelf, posts, 0, 1)
        plan = shelf.plan()
        assert plan.refusals == []
        assert sorted(a.key for a in plan.actions) == ["orphans/o 2.bin", "orphans/o1.bin"]
        outcome = shelf.run()
        assert outcome.status == "ok"
        assert sorted(a.key for a in outcome.actions) == ["orphans/o 2.bin", "orphans/o1.bin"]
        left = {info.key for _, info in shelf.ls()}
        assert left == set(keys)
        for key in keys:  # every row value still gets its object, bytes intact
            assert shelf.get(key) == key.encode()
        # The values as the rows hold them resolve, through url/get, to their objects.
        row = posts.values()[0]
        assert shelf.get(row["cover"]) == b"covers/c 0.jpg"
        assert shelf.get(row["signed"]) == b"signed/s0.jpg"
    figures.add("spellings", protected_objects=len(keys))


@pytest.mark.invariant("I1")
def test_audit_finds_references_of_every_form_that_point_at_nothing(
    tmp_path: Path, posts: Posts
) -> None:
    with posts_shelf(tmp_path, posts, []) as shelf:
        fill(shelf, posts, 0, 1)
        gone = ["covers/c 1.jpg", "signed/s0.jpg", "media/thumbs/t1.jpg", "docs/e0 x.png"]
        if posts.postgres:
            gone.append("gallery/g1.jpg")
        for key in gone:
            (tmp_path / "cdn" / key).unlink()
        shelf.scan()
        report = shelf.audit()
        assert sorted(d.key for d in report.dangling) == sorted(gone)
        # the gallery's external links name no tier: counted, never followed
        assert report.unmatched == (2 if posts.postgres else 0)
        assert all(d.found_on is None for d in report.dangling)


@pytest.mark.invariant("I1", "I2")
def test_migration_rewrites_every_form_in_place(tmp_path: Path, posts: Posts) -> None:
    with posts_shelf(tmp_path, posts, [MIGRATE]) as shelf:
        keys = fill(shelf, posts, 0, 1)
        outcome = shelf.run()
        assert outcome.status == "ok", outcome.failed
        assert {a.key for a in outcome.actions} >= set(keys)
        for row in posts.values():
            i = row["id"]
            assert row["cover"] == f"s3://cold-bucket/covers/c {i}.jpg"
            assert row["signed"] == f"s3://cold-bucket/signed/s{i}.jpg"
            media = row["media"] if isinstance(row["media"], dict) else json.loads(row["media"])
            assert media == {
                "video": {"src": f"s3://cold-bucket/media/m{i}.mp4"},
                "thumbs": [f"s3://cold-bucket/media/thumbs/t{i}.jpg"],
                "title": "Clip",
            }
            assert f"(s3://cold-bucket/docs/d{i}.png)" in row["body"]
            assert f'src="s3://cold-bucket/docs/e{i}%20x.png"' in row["body"]  # encoded in text
            assert row["body"].startswith(f"# Post {i}\n![diagram](")
            if posts.postgres:
                assert row["gallery"] == [
                    "https://elsewhere.example.org/logo.png",
                    f"s3://cold-bucket/gallery/g{i}.jpg",
                ]
        shelf.scan()
        assert shelf.audit().dangling == []
        for key in keys:
            assert not (tmp_path / "cdn" / key).exists()
            assert (tmp_path / "cold" / key).read_bytes() == key.encode()


@pytest.mark.invariant("I1")
def test_listen_releases_what_a_deleted_row_of_every_form_held(tmp_path: Path, pg_url: str) -> None:
    posts = Posts(pg_url, tmp_path)
    with posts_shelf(tmp_path, posts, []) as shelf:
        fill(shelf, posts, 0, 1)
        stop = threading.Event()
        stats: list[Any] = []
        worker = threading.Thread(
            target=lambda: stats.append(
                listen(shelf.sources(), shelf.release, stop=stop.is_set, poll_seconds=0.1)
            )
        )
        worker.start()
        try:
            wait_for_triggers(posts.engine, posts.name, 5)
            posts.delete(0)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = {info.key for _, info in shelf.ls()}
                if not left & set(posts.keys(0)):
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            worker.join(30)
        left = {info.key for _, info in shelf.ls()}
        assert not left & set(posts.keys(0)), left  # every reference the row held, released
        assert set(posts.keys(1)) <= left  # the other row's objects stay
        assert stats[0].released == len(posts.keys(0))
    posts.engine.dispose()


@pytest.mark.invariant("I1")
def test_a_long_value_released_in_postgresql_never_fails_the_applications_delete(
    tmp_path: Path, pg_url: str
) -> None:
    posts = Posts(pg_url, tmp_path)
    with posts_shelf(tmp_path, posts, []) as shelf:
        from shelflife.references.listen import install_triggers

        install_triggers(shelf.sources())
        with posts.engine.begin() as conn:
            conn.execute(
                posts.table.insert(), [{"id": 9, "body": "x" * 20_000 + f" {CDN}docs/big.png"}]
            )
        posts.delete(9)  # the payload is over NOTIFY's 8000 bytes: sent empty, no error
        assert posts.values() == []
    posts.engine.dispose()


# -- undeclared columns ------------------------------------------------------------------------


@pytest.mark.invariant("I3")
def test_an_undeclared_json_column_stops_collection_until_declared_or_ignored(
    tmp_path: Path, app_db_url: str
) -> None:
    app = AppTable(app_db_url)
    extra = Table(
        f"profiles_{uuid.uuid4().hex[:6]}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("settings", JSON),
    )
    extra.create(app.engine)
    with app.engine.begin() as conn:
        conn.execute(
            extra.insert(),
            [{"id": 1, "settings": {"avatar": {"src": "data/storage/outputs/avatars/a.png"}}}],
        )
    config = tmp_path / "shelflife.toml"
    body: dict[str, Any] = {
        "catalog": {"url": "sqlite:///catalog.db"},
        "databases": {"app": {"url": app.url}},
        "tiers": {
            "local": {
                "create": True,
                "url": "file://outputs",
                "ref_format": "data/storage/outputs/{key}",
            }
        },
        "references": [{"database": "app", "table": app.name, "column": "path"}],
        "rules": [COLLECT],
    }
    write_toml(config, body)
    with Shelf.open(config) as shelf:
        for key in ("avatars/a.png", "kept.bin", "orphan.bin"):
            shelf.put(key.encode(), key)
        shelf.ledger.purge_expired_leases(shelf_later())
    app.insert("data/storage/outputs/kept.bin")

    checked = shelflife("-c", str(config), "check", "--json", cwd=tmp_path)
    findings = [c for c in json.loads(checked.stdout)["checks"] if c["name"].endswith(".settings")]
    assert len(findings) == 1
    assert findings[0]["warning"]
    assert f'table = "{extra.name}"' in findings[0]["hint"]
    assert 'kind = "json"' in findings[0]["hint"]
    for command in (["run", "--dry-run"], ["run"], ["gc"]):
        result = shelflife("-c", str(config), *command, "--json", cwd=tmp_path)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
    assert sorted(p.name for p in (tmp_path / "outputs").rglob("*") if p.is_file()) == [
        "a.png",
        "kept.bin",
        "orphan.bin",
    ]

    body["ignore_columns"] = [
        {"database": "app", "table": extra.name, "column": "settings", "reason": "test"}
    ]
    write_toml(config, body)
    # Ignored, the column no longer protects a.png: it is an orphan like any other.
    result = shelflife("-c", str(config), "run", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(a["key"] for a in json.loads(result.stdout)["actions"]) == [
        "avatars/a.png",
        "orphan.bin",
    ]
    app.dispose()


# -- bare keys on several tiers ------------------------------------------------------------------


@pytest.mark.invariant("I1")
def test_bare_keys_on_two_tiers_audit_names_exactly_the_dangling_rows(tmp_path: Path) -> None:
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    config = tmp_path / "shelflife.toml"
    write_toml(
        config,
        {
            "catalog": {"url": "sqlite:///catalog.db"},
            "databases": {"app": {"url": app.url}},
            "tiers": {
                "media": {"create": True, "url": "file://media", "ref_format": "{key}"},
                "archive": {"create": True, "url": "file://archive", "ref_format": "{key}"},
            },
            "references": [{"database": "app", "table": app.name, "column": "path"}],
            "rules": [COLLECT],
        },
    )
    with Shelf.open(config) as shelf:
        for n in range(5):
            shelf.put(b"m", f"uploads/m{n}.jpg", tier="media")
            shelf.put(b"a", f"uploads/a{n}.jpg", tier="archive")
        shelf.put(b"o", "uploads/orphan.jpg", tier="archive")
        shelf.ledger.purge_expired_leases(shelf_later())
    app.insert(*[f"uploads/m{n}.jpg" for n in range(5)], *[f"uploads/a{n}.jpg" for n in range(5)])
    app.insert("", "   ")  # a blank FileField stores '': NULL, no warning
    (tmp_path / "archive" / "uploads" / "a3.jpg").unlink()

    scan = shelflife("-c", str(config), "scan", "--json", cwd=tmp_path)
    assert json.loads(scan.stdout)["references"]["unmatched"] == 0
    audit = shelflife("-c", str(config), "audit", "--json", cwd=tmp_path)
    assert [d["value"] for d in json.loads(audit.stdout)["dangling"]] == ["uploads/a3.jpg"]
    run = shelflife("-c", str(config), "run", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "match no tier" not in run.stderr
    assert [a["key"] for a in json.loads(run.stdout)["actions"]] == ["uploads/orphan.jpg"]
    checked = json.loads(shelflife("-c", str(config), "check", "--json", cwd=tmp_path).stdout)
    shared = [c for c in checked["checks"] if "share the spelling" in c["message"]]
    assert len(shared) == 1
    assert shared[0]["warning"]
    app.dispose()


def test_check_suggests_a_trigram_index_for_substring_searched_columns(
    tmp_path: Path, pg_url: str
) -> None:
    posts = Posts(pg_url, tmp_path)
    with posts_shelf(tmp_path, posts, []) as shelf:
        from shelflife.service.checks import lint_references

        def hints() -> dict[str, str]:
            found = lint_references(shelf.config, shelf.databases, shelf.locator)
            return {r.name: r.hint or "" for r in found if r.hint and "gin_trgm_ops" in r.hint}

        suggested = hints()
        assert sorted(name.rsplit(".", 1)[1] for name in suggested) == ["body", "media"]
        with posts.engine.begin() as conn:
            for statement in suggested.values():
                for part in statement.split(";"):
                    conn.exec_driver_sql(part)
        assert hints() == {}  # the suggested indexes are the ones it looks for
    posts.engine.dispose()


@pytest.mark.invariant("I1", "I2")
def test_a_row_the_rewrite_cannot_change_keeps_the_source(tmp_path: Path) -> None:
    """A JSON document holding 1e999 cannot be written back (it would become Infinity):
    the row keeps naming the old location, so the migration keeps the source."""
    app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
    reference = {"database": "app", "table": app.name, "column": "path", "kind": "json"}
    document = f'{{"size": 1e999, "src": "{CDN}stuck.bin"}}'
    with cdn_shelf(tmp_path, app.url, [reference], [MIGRATE]) as shelf:
        shelf.put(b"stuck", "stuck.bin")
        shelf.put(b"free", "free.bin")
        shelf.ledger.purge_expired_leases(shelf_later())
        app.insert(document, f'{{"src": "{CDN}free.bin"}}')
        outcome = shelf.run()
        assert outcome.status == "partial"
        assert [(f.key, f.error) for f in outcome.failed] == [
            ("stuck.bin", "moved, but a row still names the old location; the source is kept")
        ]
        assert [a.key for a in outcome.actions] == ["free.bin"]
        assert document in app.values()  # the row is as it was …
        assert (tmp_path / "cdn" / "stuck.bin").read_bytes() == b"stuck"  # … and resolves
        shelf.scan()
        assert shelf.audit().dangling == []
    app.dispose()


@pytest.mark.invariant("I1", "I2")
def test_rows_differing_only_in_case_are_rewritten_apart(tmp_path: Path, app_db_url: str) -> None:
    """MariaDB's default collation finds '…/X.mp4' for '…/x.mp4': moving x.mp4 must still
    rewrite only its own row (rows change by a byte-exact comparison)."""
    app = AppTable(app_db_url)
    tiers = {
        "local": {
            "url": f"file://{tmp_path / 'outputs'}",
            "create": True,
            "ref_format": "data/storage/outputs/{key}",
        },
        "cloud": {"create": True, "url": f"file://{tmp_path / 'cold'}", "ref_format": "cold/{key}"},
    }
    rule = {**MIGRATE, "filter": {"prefix": "x"}}
    with make_app_shelf(tmp_path, app, tiers=tiers, rules=[rule]) as shelf:
        shelf.put(b"lower", "x.mp4")
        shelf.put(b"upper", "X.mp4")
        shelf.ledger.purge_expired_leases(shelf_later())
        app.insert("data/storage/outputs/x.mp4", "data/storage/outputs/X.mp4")
        outcome = shelf.run()
        assert outcome.status == "ok", outcome.failed
        assert [a.key for a in outcome.actions] == ["x.mp4"]
        assert app.values() == ["cold/x.mp4", "data/storage/outputs/X.mp4"]
        assert shelf.get("data/storage/outputs/X.mp4") == b"upper"
        assert shelf.get("cold/x.mp4") == b"lower"
    app.dispose()
