"""The Django storage backend (shelflife.contrib.django): a real Django project on
PostgreSQL, run as its own processes (migrate, runserver), whose uploads a shelflife
migration moves to a real S3 server; and the storage's semantics on file:// tiers."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from sqlalchemy import create_engine, text

from tests.support.cli import shelflife
from tests.support.servers import free_port, s3_client, wait_for_port

if not settings.configured:  # the storage reads USE_TZ; nothing else of Django is set up here
    settings.configure(USE_TZ=True)

from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import ContentFile

from shelflife.contrib.django import ShelflifeStorage, close_shelves, shelf_for

PROJECT = Path(__file__).resolve().parent / "support" / "django_project"


# -- the Django project, as its users run it ------------------------------------------------


class Site:
    """A copy of tests/support/django_project with its shelflife.toml, run by manage.py."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.config = root / "shelflife.toml"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
        }
        self.env.update(
            {
                "DATABASE_URL": database_url,
                "SHELFLIFE_CONFIG": str(self.config),
                "DJANGO_DEBUG": "1",
            }
        )

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def shelflife(self, *args: str) -> subprocess.CompletedProcess[str]:
        return shelflife("-c", str(self.config), *args, cwd=self.root)

    @staticmethod
    def links(page: str, kind: str) -> dict[str, str]:
        """The href of each listed document or attachment, by its element id."""
        found = re.findall(rf'<li id="({kind}-\d+)"><a href="([^"]+)"', page)
        return {ident: html.unescape(href) for ident, href in found}


@pytest.fixture
def site(tmp_path: Path, pg_url: str, s3_endpoint: str, s3_bucket: str) -> Site:
    root = tmp_path / "site"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns("__pycache__"))
    built = Site(root, pg_url)
    built.config.write_text(f"""
[catalog]
url = "sqlite:///shelflife.db"

[databases.app]
url = "{pg_url}"

[tiers.local]
url = "file://media"
create = true
ref_format = "{{key}}"
public_url = "/media/{{key}}"
upload_lease = "0s"

[tiers.cloud]
url = "s3://{s3_bucket}/media"
endpoint = "{s3_endpoint}"
region = "us-east-1"
access_key = "testing"
secret_key = "testing"
ref_format = "s3://{s3_bucket}/media/{{key}}"

[[references]]
database = "app"
table = "library_document"
column = "file"

[[rules]]
id = "uploads-to-s3"
tier = "local"
action = "migrate"
to = "cloud"
after = "0s"
""")
    return built


@pytest.fixture
def server(site: Site) -> Iterator[httpx.Client]:
    migrated = site.manage("migrate", "--no-input")
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log = (site.root / "runserver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=site.root,
        env=site.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, "manage.py runserver")  # type: ignore[arg-type]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        assert b"Traceback" not in (site.root / "runserver.log").read_bytes()


def upload(client: httpx.Client, path: str, data: dict[str, str], name: str, body: bytes) -> None:
    form = client.get("/")
    assert form.status_code == 200
    token = client.cookies["csrftoken"]
    answer = client.post(
        path,
        data={"csrfmiddlewaretoken": token, **data},
        files={"file": (name, body, "application/octet-stream")},
    )
    assert answer.status_code == 302, answer.text


def column(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        values = [row[0] for row in conn.execute(text(f"SELECT file FROM {table} ORDER BY id"))]
    engine.dispose()
    return values


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.invariant("I1")
def test_django_page_follows_an_upload_to_s3(
    site: Site, server: httpx.Client, pg_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    """A Django app's upload, moved to S3 by a shelflife migration, is served by the page at
    its new presigned URL with the same bytes: the declared column's row rewritten, and an
    undeclared column's row (left as it was) resolved all the same."""
    report = os.urandom(300_000)
    note = b"attachment bytes " * 100
    upload(server, "/documents/", {"title": "Annual report"}, "report 2026.pdf", report)
    upload(server, "/attachments/", {}, "note.txt", note)

    year = datetime.now(UTC).year
    assert column(pg_url, "library_document") == [f"documents/{year}/report_2026.pdf"]
    assert column(pg_url, "library_attachment") == ["attachments/note.txt"]
    page = server.get("/").text
    document = Site.links(page, "document")["document-1"]
    attachment = Site.links(page, "attachment")["attachment-1"]
    assert document == f"/media/documents/{year}/report_2026.pdf"
    assert f"({len(report)} bytes)" in page
    assert server.get(document).content == report
    assert server.get(attachment).content == note

    moved = site.shelflife("run", "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    actions = {(a["action"], a["key"], a["to"]) for a in json.loads(moved.stdout)["actions"]}
    assert actions == {
        ("migrate", f"documents/{year}/report_2026.pdf", "cloud"),
        ("migrate", "attachments/note.txt", "cloud"),
    }
    assert not (site.root / "media" / "documents" / str(year) / "report_2026.pdf").exists()
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="media/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "media/attachments/note.txt",
        f"media/documents/{year}/report_2026.pdf",
    ]
    # The declared column was rewritten; the undeclared one still holds the old key.
    assert column(pg_url, "library_document") == [
        f"s3://{s3_bucket}/media/documents/{year}/report_2026.pdf"
    ]
    assert column(pg_url, "library_attachment") == ["attachments/note.txt"]

    page = server.get("/").text  # the same server process: its shelf was opened before
    document = Site.links(page, "document")["document-1"]
    attachment = Site.links(page, "attachment")["attachment-1"]
    for href, key in [
        (document, f"documents/{year}/report_2026.pdf"),
        (attachment, "attachments/note.txt"),
    ]:
        assert href.startswith(f"{s3_endpoint}/{s3_bucket}/media/{key}?"), href
        assert "X-Amz-Signature=" in href
    assert f"({len(report)} bytes)" in page
    assert httpx.get(document).content == report
    assert httpx.get(attachment).content == note
    # Django's own reads of the moved file go to S3 too.
    assert server.get(f"/media/{column(pg_url, 'library_document')[0]}").content == report
    assert server.get("/media/attachments/note.txt").content == note


@pytest.mark.postgres
def test_django_migrations_do_not_churn_and_names_are_checked(site: Site) -> None:
    """The storage deconstructs to what the checked-in migration holds (makemigrations finds
    no change), and a hostile name is refused with a clear error and nothing stored."""
    check = site.manage("makemigrations", "--check", "--dry-run")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No changes detected" in check.stdout
    assert site.manage("migrate", "--no-input").returncode == 0

    hostile = site.manage(
        "shell",
        "-c",
        "from django.core.files.storage import default_storage as s\n"
        "from django.core.files.base import ContentFile\n"
        "from django.core.exceptions import SuspiciousFileOperation\n"
        "for name in ['../x', 'a/../../etc/passwd', '/etc/passwd', 'a\\x01b']:\n"
        "    try:\n"
        "        s.save(name, ContentFile(b'x'))\n"
        "    except SuspiciousFileOperation as e:\n"
        "        print('refused:', e)\n",
    )
    assert hostile.returncode == 0, hostile.stderr
    lines = [line for line in hostile.stdout.splitlines() if line.startswith("refused:")]
    assert len(lines) == 4, hostile.stdout
    assert all(line.startswith("refused: shelflife cannot store the file name") for line in lines)
    assert "contains .." in lines[0]
    assert "starts with '/'" in lines[2]
    assert not (site.root / "media").exists() or not any((site.root / "media").rglob("*"))


def test_import_without_django_says_what_to_install() -> None:
    """Importing the backend where Django is missing names the extra to install."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['django'] = None\nimport shelflife.contrib.django",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "ImportError" in result.stderr
    assert "pip install 'shelflife[django]'" in result.stderr


# -- the storage in this process, on file:// tiers ------------------------------------------


@pytest.fixture
def shelf_config(tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "shelflife.toml"
    config.write_text("""
[catalog]
url = "sqlite:///shelflife.db"

[tiers.local]
url = "file://media"
create = true
public_url = "/media/{key}"
upload_lease = "0s"

[tiers.cold]
url = "file://cold"
create = true
ref_format = "cold/{key}"
public_url = "https://cold.example.com/{key}"

[[rules]]
id = "to-cold"
tier = "local"
action = "migrate"
to = "cold"
after = "0s"
""")
    yield config
    close_shelves()


def test_storage_round_trip_on_a_local_tier(shelf_config: Path, tmp_path: Path) -> None:
    """save, open, exists, size, url, times, listdir and delete on a file:// tier."""
    storage = ShelflifeStorage(config=shelf_config)
    name = storage.save("docs/report.pdf", ContentFile(b"%PDF-1.7 report"))
    assert name == "docs/report.pdf"
    assert (tmp_path / "media" / "docs" / "report.pdf").read_bytes() == b"%PDF-1.7 report"
    storage.save("docs/2026/q1.txt", ContentFile("résumé"))  # text is stored as UTF-8
    storage.save("top.txt", ContentFile(b"top"))

    assert storage.exists(name)
    assert not storage.exists("docs/missing.pdf")
    assert storage.size(name) == len(b"%PDF-1.7 report")
    assert storage.url(name) == "/media/docs/report.pdf"
    with storage.open(name) as handle:
        assert handle.read() == b"%PDF-1.7 report"
    with storage.open("docs/2026/q1.txt", "r") as handle:
        assert handle.read() == "résumé"
    modified = storage.get_modified_time(name)
    assert modified.tzinfo is not None
    assert abs((datetime.now(UTC) - modified).total_seconds()) < 3600
    assert storage.get_created_time(name) <= datetime.now(UTC)
    assert storage.listdir("") == (["docs"], ["top.txt"])
    assert storage.listdir("docs") == (["2026"], ["report.pdf"])
    assert storage.listdir("docs/2026/") == ([], ["q1.txt"])
    with pytest.raises(ValueError, match="reading only"):
        storage.open(name, "wb")

    storage.delete(name)
    storage.delete(name)  # already gone is not an error
    assert not storage.exists(name)
    assert not (tmp_path / "media" / "docs" / "report.pdf").exists()
    with pytest.raises(FileNotFoundError, match=r"docs/report\.pdf"):
        storage.size(name)


def test_names_in_use_get_another_name_unless_overwrite_is_allowed(shelf_config: Path) -> None:
    """Django's semantics: a name in use gets a suffix; with allow_overwrite it is replaced."""
    storage = ShelflifeStorage(config=shelf_config)
    first = storage.save("a/report.pdf", ContentFile(b"one"))
    second = storage.save("a/report.pdf", ContentFile(b"two"))
    assert first == "a/report.pdf"
    assert re.fullmatch(r"a/report_[A-Za-z0-9]{7}\.pdf", second), second
    assert storage.open(first).read() == b"one"
    assert storage.open(second).read() == b"two"

    overwriting = ShelflifeStorage(config=shelf_config, allow_overwrite=True)
    assert overwriting.save("a/report.pdf", ContentFile(b"three")) == "a/report.pdf"
    assert storage.open("a/report.pdf").read() == b"three"


def test_concurrent_saves_of_one_name_keep_every_file(shelf_config: Path) -> None:
    """Threads saving the same name at once share one shelf and each keep their bytes: a
    write that finds the name taken after the check (create-only) takes another name."""
    storage = ShelflifeStorage(config=shelf_config)
    names: dict[int, str] = {}
    barrier = threading.Barrier(8)

    def save(i: int) -> None:
        barrier.wait()
        names[i] = storage.save("race/same.bin", ContentFile(f"writer {i}".encode() * 1000))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names.values())) == 8
    for i, name in names.items():
        assert storage.open(name).read() == f"writer {i}".encode() * 1000


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", r"\.\."),
        ("a/../../x", r"\.\."),
        ("/etc/passwd", "starts with '/'"),
        ("a\x01/b.txt", "control character"),
        ("a/" + "b" * 1100, "bytes long"),
    ],
)
def test_hostile_names_are_refused(
    shelf_config: Path, tmp_path: Path, name: str, reason: str
) -> None:
    """A name shelflife may not store is refused with a clear SuspiciousFileOperation
    (a 400 in a request), by save and by every read, and nothing is written."""
    storage = ShelflifeStorage(config=shelf_config)
    with pytest.raises(SuspiciousFileOperation, match=reason):
        storage.save(name, ContentFile(b"x"))
    with pytest.raises(SuspiciousFileOperation):
        storage.generate_filename(name)
    with pytest.raises(SuspiciousFileOperation):
        storage.exists(name)
    assert not (tmp_path / "media").exists() or not any((tmp_path / "media").rglob("*"))


def test_a_moved_object_resolves_whatever_the_name_says(shelf_config: Path) -> None:
    """After a migration the key a row still holds (not rewritten) and the destination's
    spelling both lead to the object where it is now."""
    storage = ShelflifeStorage(config=shelf_config)
    name = storage.save("docs/moved.txt", ContentFile(b"moved bytes"))
    created = storage.get_created_time(name)
    outcome = shelf_for(shelf_config).run()
    assert [(a.key, a.to) for a in outcome.actions] == [("docs/moved.txt", "cold")]

    for spelling in [name, "cold/docs/moved.txt"]:
        assert storage.exists(spelling)
        assert storage.url(spelling) == "https://cold.example.com/docs/moved.txt"
        assert storage.open(spelling).read() == b"moved bytes"
        assert storage.size(spelling) == len(b"moved bytes")
        assert storage.get_created_time(spelling) == created  # ages survive moves
    assert storage.listdir("docs") == ([], ["moved.txt"])
    # A new upload under the old name does not take the moved object's key.
    assert storage.save(name, ContentFile(b"new")) != name
    storage.delete(name)
    assert not storage.exists("cold/docs/moved.txt")


def test_the_shelf_is_opened_once_per_process_and_configuration(shelf_config: Path) -> None:
    """Storages naming one configuration share one shelf, opened on first use."""
    one = ShelflifeStorage(config=shelf_config, tier="local")
    two = ShelflifeStorage(config=str(shelf_config), tier="cold")
    assert one.shelf is two.shelf is shelf_for(shelf_config)
    assert two.save("x.txt", ContentFile(b"x")) == "x.txt"
    assert two.url("x.txt") == "https://cold.example.com/x.txt"


def test_deconstruct_gives_back_the_options() -> None:
    storage = ShelflifeStorage(config="site/shelflife.toml", tier="cloud", allow_overwrite=True)
    assert storage.deconstruct() == (
        "shelflife.contrib.django.ShelflifeStorage",
        (),
        {"config": "site/shelflife.toml", "tier": "cloud", "allow_overwrite": True},
    )
    assert ShelflifeStorage().deconstruct() == ("shelflife.contrib.django.ShelflifeStorage", (), {})


def test_configuration_errors_say_what_to_fix(shelf_config: Path, tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"tier 'nope' is not a tier of .*local, cold"):
        ShelflifeStorage(config=shelf_config, tier="nope").exists("x")
    missing = tmp_path / f"{uuid.uuid4().hex}.toml"
    with pytest.raises(ImproperlyConfigured, match=re.escape(str(missing))):
        ShelflifeStorage(config=missing).exists("x")


def spelled_config(tmp_path: Path) -> Path:
    """Two file:// tiers whose reference spellings look like keys (``outputs/{key}``)."""
    config = tmp_path / "spelled.toml"
    config.write_text("""
[catalog]
url = "sqlite:///spelled.db"

[tiers.local]
url = "file://outputs"
create = true
ref_format = "outputs/{key}"

[tiers.cloud]
url = "file://cold"
create = true
ref_format = "cold/{key}"
""")
    return config


def test_a_name_is_its_own_key_before_any_spelling(tmp_path: Path) -> None:
    """A saved name that looks like a tier's spelling (``outputs/x.mp4``) stays the key it
    was saved under: exists, open, size and delete reach it, never the object ``x.mp4``
    the spelling would name; a name no tier holds is still read as a spelling."""
    storage = ShelflifeStorage(config=spelled_config(tmp_path), tier="local")
    try:
        name = storage.save("outputs/x.mp4", ContentFile(b"the upload"))
        assert name == "outputs/x.mp4"
        assert storage.exists(name)
        other = storage.save("x.mp4", ContentFile(b"another object"))
        assert other == "x.mp4"
        assert storage.open(name).read() == b"the upload"
        assert storage.size(name) == len(b"the upload")

        storage.delete(name)
        assert not (tmp_path / "outputs" / "outputs" / "x.mp4").exists()
        assert (tmp_path / "outputs" / "x.mp4").read_bytes() == b"another object"
        # No key outputs/x.mp4 any more: the name is the local tier's spelling of x.mp4.
        assert storage.open(name).read() == b"another object"
    finally:
        close_shelves()


def test_an_overwrite_replaces_the_file_where_it_lives_now(
    shelf_config: Path, tmp_path: Path
) -> None:
    """With allow_overwrite, saving a name a migration moved to another tier replaces the
    object there: one copy, and the row the migration rewrote reads the new bytes."""
    storage = ShelflifeStorage(config=shelf_config, allow_overwrite=True)
    name = storage.save("m.txt", ContentFile(b"version 1"))
    outcome = shelf_for(shelf_config).run()
    assert [(a.key, a.to) for a in outcome.actions] == [("m.txt", "cold")]

    assert storage.save(name, ContentFile(b"version 2")) == name
    assert not (tmp_path / "media" / "m.txt").exists()
    assert (tmp_path / "cold" / "m.txt").read_bytes() == b"version 2"
    assert storage.open(name).read() == b"version 2"
    assert storage.open("cold/m.txt").read() == b"version 2"
    # A name nothing holds still goes to the storage's tier.
    storage.save("new.txt", ContentFile(b"new"))
    assert (tmp_path / "media" / "new.txt").read_bytes() == b"new"
