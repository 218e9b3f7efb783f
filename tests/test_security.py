"""Security review and bad input, as a user meets them: the ``shelflife`` command.

Path traversal through every entry point (command line, Python API, values read from
application rows), symbolic links inside a ``file://`` tier, presigned URL lifetime,
token storage, secrets in output and in the wrong places, unreadable files, a disk that
fills during a recall, corrupt plan files. Every case checks that nothing outside the
tier was touched and nothing inside it was lost. (The HTTP API's own hostile-key cases
are in test_api.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from shelflife import Shelf
from shelflife.errors import ShelflifeError
from tests.support.apps import AppTable
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.figures import Figures

REF = "data/storage/outputs/{}"
HOSTILE_KEYS = [
    "../sentinel",
    "../../sentinel",
    "a/../../sentinel",
    "/etc/hostname",
    "..",
    "./a.bin",
    "a//b",
    "a\\..\\..\\sentinel",
    "data/storage/outputs/../../sentinel",
    "/workspace/outputs/../../sentinel",
    "file:///etc/hostname",
    "a/\x1b[31m",
]


class Site:
    """A checkout with a local tier, a cold tier, an application table and, beside the
    tiers, a sentinel file and folder no operation may touch."""

    def __init__(self, tmp_path: Path, rules: str = "", extra: str = "") -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.base = tmp_path
        self.outputs = tmp_path / "outputs"
        self.cold = tmp_path / "cold"
        self.outputs.mkdir()
        self.cold.mkdir()
        self.sentinel = tmp_path / "sentinel"
        self.sentinel.write_bytes(b"do not touch")
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        (self.outside / "secret.txt").write_bytes(b"private")
        self.app = AppTable(f"sqlite:///{tmp_path / 'app.db'}")
        self.config = tmp_path / "shelflife.toml"
        self.config.write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[databases.app]
url = "{self.app.url}"
[tiers.local]
url = "file://outputs"
create = true
ref_format = "data/storage/outputs/{{key}}"
ref_aliases = ["/workspace/outputs/{{key}}"]
[tiers.cold]
url = "file://cold"
create = true
ref_format = "data/storage/cold/{{key}}"
[[references]]
database = "app"
table = "{self.app.name}"
column = "path"
on_expire = "null"
{rules}
{extra}
""")

    def cli(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return shelflife("-c", str(self.config), *args, cwd=self.base, **kw)  # type: ignore[arg-type]

    def shelf(self) -> Shelf:
        return Shelf.open(self.config)

    def untouched(self) -> None:
        assert self.sentinel.read_bytes() == b"do not touch"
        assert sorted(p.name for p in self.outside.iterdir()) == ["secret.txt"]
        assert (self.outside / "secret.txt").read_bytes() == b"private"

    def files(self, tier: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(tier)): p.read_bytes()
            for p in tier.rglob("*")
            if p.is_file() and not p.is_symlink()
        }


EVERYTHING = """
[[rules]]
id = "orphans"
tier = "local"
action = "collect-orphans"
grace = "0s"
max_fraction = 1.0
[[rules]]
id = "age-out"
tier = "local"
action = "migrate"
to = "cold"
after = "0s"
"""


@pytest.mark.invariant("I1", "I7")
def test_symlinks_inside_a_local_tier_are_never_followed(tmp_path: Path, figures: Figures) -> None:
    """Links to a folder and a file outside the tier: never listed, collected, migrated,
    read or written through; the files they point at stay as they were."""
    site = Site(tmp_path, rules=EVERYTHING)
    (site.outputs / "kept.bin").write_bytes(b"kept")
    (site.outputs / "orphan.bin").write_bytes(b"orphan")
    site.app.insert(REF.format("kept.bin"))
    (site.outputs / "linkdir").symlink_to(site.outside)
    (site.outputs / "linkfile").symlink_to(site.outside / "secret.txt")
    (site.outputs / "sub").mkdir()
    (site.outputs / "sub" / "up").symlink_to(site.base)
    listed = site.cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "secret" not in listed.stdout
    assert "linkdir" not in listed.stdout
    assert "sentinel" not in listed.stdout
    run = site.cli("run", "--yes", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    body = json.loads(run.stdout)
    touched = {a["key"] for a in body["actions"]}
    assert touched == {"orphan.bin", "kept.bin"}, body
    site.untouched()
    assert (site.outputs / "linkdir").is_symlink()
    assert (site.outputs / "linkfile").is_symlink()
    assert site.files(site.cold) == {"kept.bin": b"kept"}
    inputs = 0
    for key in ("linkfile", "linkdir/secret.txt", "sub/up/sentinel"):
        got = site.cli("get", key, str(tmp_path / "copy"))
        assert got.returncode != 0  # no object: links are never listed nor resolved
        assert not (tmp_path / "copy").exists()
        stored = site.cli("put", str(site.config), key)
        assert stored.returncode == 2, stored.stdout + stored.stderr
        assert "symbolic link" in stored.stdout + stored.stderr
        removed = site.cli("rm", key)
        assert removed.returncode != 0
        inputs += 3
    site.untouched()
    assert site.sentinel.read_bytes() == b"do not touch"
    figures.add("security: symbolic links in a file:// tier", links=3, inputs=inputs, escaped=0)


@pytest.mark.invariant("I7")
def test_path_traversal_through_every_entry_point(tmp_path: Path, figures: Figures) -> None:
    """Hostile keys on the command line and in the Python API, and hostile values in
    application rows that a run reads: refused or reported, nothing outside touched."""
    site = Site(tmp_path, rules=EVERYTHING)
    (site.outputs / "a.bin").write_bytes(b"a")
    site.app.insert(REF.format("a.bin"))
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"payload")
    tried = 0
    for key in HOSTILE_KEYS:
        for args in (
            ("get", key, str(tmp_path / "out.bin")),
            ("url", key),
            ("rm", key),
            ("pin", key),
            ("recall", key),
            ("restore", key),
            ("put", str(payload), key),
        ):
            result = site.cli(*args)
            tried += 1
            assert result.returncode != 0, (args, result.stdout)
            site.untouched()
            assert not (tmp_path / "out.bin").exists()
    with site.shelf() as shelf:
        for key in [*HOSTILE_KEYS, "a\x00b", "a/\x00/../../sentinel"]:
            for call in (shelf.get, shelf.url, shelf.delete, shelf.resolve, shelf.pin):
                tried += 1
                with pytest.raises((ShelflifeError, ValueError)):
                    call(key)
            with pytest.raises((ShelflifeError, ValueError)):
                shelf.put(b"x", key)
            tried += 1
    # Rows holding hostile values: a run collects, expires and migrates around them.
    site.app.insert(
        *[REF.format(key) for key in HOSTILE_KEYS[:6]], "/workspace/outputs/../sentinel"
    )
    tried += 7
    # 7 of 8 values name no object: the source cannot be trusted, nothing is removed.
    refused = site.cli("run", "--yes", "--json")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["actions"] == []
    site.untouched()
    assert site.files(site.outputs) == {"a.bin": b"a"}
    # Told that such values name no object, a run goes around them.
    site.config.write_text(
        site.config.read_text().replace(
            'on_expire = "null"', 'on_expire = "null"\nmax_unmatched = 0.9'
        )
    )
    run = site.cli("run", "--yes", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {a["key"] for a in json.loads(run.stdout)["actions"]} == {"a.bin"}
    audit = site.cli("audit", "--json")
    assert "Traceback" not in audit.stderr
    site.untouched()
    assert site.files(site.cold) == {"a.bin": b"a"}
    figures.add("security: path traversal", inputs=tried, escaped=0)


def test_presigned_url_lifetime_is_bounded(tmp_path: Path) -> None:
    """presign_ttl above S3's 7 days (or below 1 s) is a config error naming the field."""
    for ttl in ("8d", "0s", "30d"):
        site = Site(tmp_path / ttl, extra=f"[tiers.extra]\nurl = 's3://b/p'\npresign_ttl = '{ttl}'")
        result = site.cli("check")
        assert result.returncode == 2
        assert "tiers.extra.presign_ttl" in result.stdout + result.stderr
        assert "7d" in result.stdout + result.stderr


def test_tokens_are_kept_only_as_hashes(tmp_path: Path) -> None:
    """The catalog holds a token's SHA-256, never the token; listing never shows it."""
    site = Site(tmp_path)
    created = site.cli("token", "create", "ci", "--scopes", "write")
    assert created.returncode == 0, created.stderr
    token = next(w for w in created.stdout.split() if w.startswith("slf_"))
    catalog = (tmp_path / "catalog.db").read_bytes()
    assert token.encode() not in catalog
    assert hashlib.sha256(token.encode()).hexdigest().encode() in catalog
    listed = site.cli("token", "list")
    assert token not in listed.stdout
    assert "ci" in listed.stdout


SECRET = "S3cr3t-Never-Shown-7f3a"
DB_PASSWORD = "Db-Pa55-Never-Shown-91c"


@pytest.mark.invariant("I7")
def test_secrets_never_reach_output_logs_or_errors(
    tmp_path: Path, pg_url: str, figures: Figures
) -> None:
    """A secret key and a database password: absent from check, stats, scan and error
    output, in text and JSON, at every log level."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    site = Site(tmp_path)
    text = site.config.read_text().replace(site.app.url, url)
    text += f"""
[tiers.cloud]
url = "s3://bucket/prefix"
endpoint = "http://127.0.0.1:9"
access_key = "AKIAEXAMPLE"
secret_key = "{SECRET}"
retries = 0
"""
    site.config.write_text(text.replace(f'table = "{site.app.name}"', 'table = "no_such_table"'))
    outputs = []
    for args in (
        ("check",),
        ("check", "--json"),
        ("--log-level", "debug", "check"),
        ("--log-level", "debug", "--log-format", "json", "scan"),
        ("stats",),
        ("run", "--dry-run", "--json"),
        ("get", "x", str(tmp_path / "x")),
        ("--log-level", "debug", "ls", "--tier", "cloud"),
    ):
        result = site.cli(*args)
        outputs.append(result.stdout + result.stderr)
    assert any("127.0.0.1:9" in out for out in outputs)  # the failing store was reported
    for out in outputs:
        assert SECRET not in out
        assert DB_PASSWORD not in out
    figures.add("security: secrets in output", commands=len(outputs), leaked=0)


@pytest.mark.invariant("I7")
def test_secrets_in_the_wrong_places_are_refused_without_echo(tmp_path: Path) -> None:
    """Credentials written into a URL, a secret where a size belongs: exit 2 naming the
    field, and the secret never printed."""
    cases = [
        ("url = 's3://AKIA:{s}@bucket/p'", "tiers.extra.url"),
        ("url = 's3://b/p'\nendpoint = 'http://user:{s}@127.0.0.1:9000'", "tiers.extra.endpoint"),
        ("url = 'file://x'\npublic_url = 'https://u:{s}@cdn.example/{{key}}'", "public_url"),
        ("url = 's3://b/p'\nsecret_key = '{s}'\ncapacity = '{s}'", "tiers.extra.capacity"),
        ("url = 's3://b/p'\npassword = '{s}'", "tiers.extra.password"),
    ]
    for number, (fields, path) in enumerate(cases):
        site = Site(tmp_path / str(number), extra="[tiers.extra]\n" + fields.format(s=SECRET))
        result = site.cli("check")
        out = result.stdout + result.stderr
        assert result.returncode == 2, out
        assert path in out, out
        assert SECRET not in out


def _without_dac(args: list[str]) -> list[str]:
    """Run as root without the capabilities that bypass file permissions."""
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *args]


@pytest.mark.invariant("I1", "I7")
def test_an_unreadable_file_fails_its_action_and_loses_nothing(tmp_path: Path) -> None:
    """A file the run cannot read: its migration fails with a clear reason, the run is
    partial, the file and its row are unchanged; once readable, the next run moves it."""
    site = Site(tmp_path, rules=EVERYTHING)
    for name in ("open.bin", "locked.bin"):
        (site.outputs / name).write_bytes(name.encode())
        site.app.insert(REF.format(name))
    (site.outputs / "locked.bin").chmod(0o000)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHELFLIFE_")}
    command = _without_dac([SHELFLIFE, "-c", str(site.config), "run", "--yes", "--json"])
    probe = subprocess.run(_without_dac(["cat", str(site.outputs / "locked.bin")]), check=False)
    if probe.returncode == 0:
        pytest.skip("this process cannot drop the capability to bypass file permissions")
    result = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, check=False
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "partial"
    failed = {f["key"]: f["error"] for f in body["failed"]}
    assert list(failed) == ["locked.bin"]
    assert "permission" in failed["locked.bin"].lower() or "refused" in failed["locked.bin"]
    assert (site.outputs / "locked.bin").stat().st_mode & 0o777 == 0
    assert REF.format("locked.bin") in site.app.values()
    (site.outputs / "locked.bin").chmod(0o644)
    again = site.cli("run", "--yes", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert site.files(site.cold) == {"open.bin": b"open.bin", "locked.bin": b"locked.bin"}
    assert sorted(site.app.values()) == [
        "data/storage/cold/locked.bin",
        "data/storage/cold/open.bin",
    ]


@pytest.mark.invariant("I1", "I7")
def test_a_disk_that_fills_during_recall(tmp_path: Path) -> None:
    """Recall onto a 1 MiB tmpfs of a 3 MiB object: a clear 'no space' error, the object
    and its row where they were, no partial file left on the full disk."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        site = Site(tmp_path)
        site.config.write_text(
            site.config.read_text().replace('"file://outputs"', '"file://small"')
        )
        big = os.urandom(3 * 1024 * 1024)
        (site.cold / "big.bin").write_bytes(big)
        site.app.insert("data/storage/cold/big.bin")
        result = site.cli("recall", "data/storage/cold/big.bin")
        out = result.stdout + result.stderr
        assert result.returncode == 1, out
        assert "no space left" in out
        assert (site.cold / "big.bin").read_bytes() == big
        assert site.app.values() == ["data/storage/cold/big.bin"]
        assert not [p for p in small.rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", str(small)], check=False)


@pytest.mark.invariant("I7")
def test_corrupt_and_partial_plan_files_change_nothing(tmp_path: Path, figures: Figures) -> None:
    """Truncated, empty, binary, tampered plan files: exit 2 and nothing changed; a real
    plan applies once, and a second apply says it was applied."""
    site = Site(tmp_path, rules=EVERYTHING)
    for name in ("a.bin", "b.bin"):
        (site.outputs / name).write_bytes(name.encode())
    site.app.insert(REF.format("a.bin"))
    assert site.cli("scan").returncode == 0
    made = site.cli("plan", "-o", "plan.json")
    assert made.returncode == 0, made.stderr
    good = (tmp_path / "plan.json").read_text()
    body = json.loads(good)
    assert {a["key"] for a in body["actions"]} == {"a.bin", "b.bin"}
    tampered = dict(body, actions=[dict(a, key="../sentinel") for a in body["actions"]])
    variants = {
        "truncated": good[: len(good) // 2],
        "empty": "",
        "binary": "\x00\xff\xfe garbage",
        "a list": "[1, 2, 3]",
        "no actions": json.dumps({k: v for k, v in body.items() if k != "actions"}),
        "bad action": json.dumps(dict(body, actions=[{"action": "explode"}])),
        "tampered keys": json.dumps(tampered),
    }
    before = site.files(site.outputs)
    for name, text in variants.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text, errors="surrogateescape")
        result = site.cli("apply", str(path), "--yes")
        assert result.returncode == 2, (name, result.stdout + result.stderr)
        assert site.files(site.outputs) == before, name
        site.untouched()
    first = site.cli("apply", "plan.json", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    second = site.cli("apply", "plan.json", "--yes")
    assert second.returncode == 2
    assert "already applied" in second.stdout + second.stderr
    figures.add("bad input: plan files", inputs=len(variants) + 1, changed=0)
