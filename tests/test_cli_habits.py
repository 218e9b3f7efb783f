"""What users bring from rclone, mc and terraform: --version, -v/-q, completion, ``get -``,
folders as destinations, the umask, --json everywhere (errors too), S3-style prefixes,
``rm`` of what is gone, per-run --transfers/--max-delete, and a quiet ``check`` on a
fresh install. The command runs as a subprocess wherever the process matters."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

import shelflife as package
from shelflife.base.units import utcnow
from shelflife.errors import RefusedError
from shelflife.service.checks import check_schedule
from shelflife.service.shelf import Shelf
from tests.support.cli import SHELFLIFE, shelflife
from tests.support.servers import s3_tier

CONFIG = """
[catalog]
url = "sqlite:///catalog.db"
[tiers.local]
url = "file://outputs"
create = true
[tiers.cold]
url = "file://cold"
create = true
[schedule]
lifecycle = "0 3 * * *"
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "shelflife.toml").write_text(CONFIG)
    return tmp_path


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    body = json.loads(result.stdout)
    assert isinstance(body, dict)
    return body


def put_all(home: Path, objects: dict[str, bytes], tier: str | None = None) -> None:
    """Store objects in this process: the setup of tests about other commands (`put` from
    the command line has tests of its own), one process start instead of one per object."""
    with Shelf.open(home / "shelflife.toml") as shelf:
        for key, data in objects.items():
            shelf.put(data, key, tier=tier)


def with_umask(umask: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = " ".join(shlex.quote(a) for a in (SHELFLIFE, *args))
    return subprocess.run(
        ["sh", "-c", f"umask {umask} && exec {command}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- global options -------------------------------------------------------------------


def test_version_verbosity_and_their_conflicts(home: Path) -> None:
    version = shelflife("--version", cwd=home)
    assert (version.returncode, version.stdout) == (0, f"shelflife {package.__version__}\n")
    assert shelflife("-v", "-q", "ls", cwd=home).returncode == 2
    both = shelflife("-vv", "--log-level", "error", "ls", cwd=home)
    assert both.returncode == 2
    assert "give one" in both.stderr
    assert shelflife("-vv", "ls", cwd=home).returncode == 0
    told = shelflife("rm", "never/was", cwd=home)
    assert "already gone" in told.stderr
    quiet = shelflife("-q", "rm", "never/was", cwd=home)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    # -qq keeps errors, with their hint
    failed = shelflife("-qq", "get", "never/was", cwd=home)
    assert failed.returncode == 1
    assert "error:" in failed.stderr
    assert "hint:" in failed.stderr


@pytest.mark.parametrize(
    ("args", "message", "command"),
    [
        (["rm"], "Missing argument 'key'.", "shelflife rm"),
        (["get", "--bogus", "x"], "No such option: --bogus", "shelflife get"),
        (["frobnicate"], "No such command 'frobnicate'.", "shelflife"),
    ],
)
def test_parse_errors_are_error_and_hint(
    home: Path, args: list[str], message: str, command: str
) -> None:
    plain = shelflife(*args, cwd=home)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [
        f"error: {message}",
        f"hint: run '{command} --help' for its arguments and options",
    ]
    assert "Usage:" not in plain.stderr + plain.stdout
    body = shelflife(*args, "--json", cwd=home)
    assert body.returncode == 2
    assert as_json(body)["error"] == {
        "code": "invalid_request",
        "message": message,
        "hint": f"run '{command} --help' for its arguments and options",
    }


def test_a_bad_log_level_has_a_hint(home: Path) -> None:
    bad = shelflife("--log-level", "bogus", "ls", cwd=home)
    assert bad.returncode == 2
    assert "error: --log-level must be debug, info, warning or error" in bad.stderr
    assert "hint: run 'shelflife --help'" in bad.stderr


def test_verbose_logs_each_action_at_info(home: Path) -> None:
    put_all(home, {"k": b"x"})
    rules = '[[rules]]\nid = "drop"\ntier = "local"\naction = "expire"\nafter = "0d"\n'
    (home / "shelflife.toml").write_text(CONFIG + rules)
    plain = shelflife("run", "--yes", cwd=home)
    assert plain.returncode == 0, plain.stderr
    put_all(home, {"k": b"x"})
    loud = shelflife("-v", "run", "--yes", cwd=home)
    assert loud.returncode == 0, loud.stderr
    assert "INFO" in loud.stderr or "info" in loud.stderr.lower()
    assert "INFO" not in plain.stderr


def test_shell_completion_is_typers_own(home: Path) -> None:
    script = shelflife("--show-completion", "bash", cwd=home)
    assert script.returncode == 0
    assert "_SHELFLIFE_COMPLETE" in script.stdout
    env = {"_SHELFLIFE_COMPLETE": "complete_bash", "COMP_WORDS": "shelflife l", "COMP_CWORD": "1"}
    words = shelflife(cwd=home, env=env)
    assert set(words.stdout.split()) == {"ls", "listen", "log"}
    help_text = shelflife("--help", cwd=home).stdout
    assert "--install-completion" in help_text
    assert "--version" in help_text


# -- get ---------------------------------------------------------------------------------


def test_get_dash_streams_the_bytes_to_stdout(home: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (home / "blob.bin").write_bytes(payload)
    assert shelflife("put", "blob.bin", "deep/blob.bin", cwd=home).returncode == 0
    result = subprocess.run(
        [SHELFLIFE, "get", "deep/blob.bin", "-"], cwd=home, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload
    assert not (home / "-").exists()
    # a reader that leaves early (``| head -c``) ends the download without a traceback
    reader = subprocess.Popen(
        [SHELFLIFE, "get", "deep/blob.bin", "-"],
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    assert reader.stderr is not None
    assert reader.stdout.read(10) == payload[:10]
    reader.stdout.close()
    assert reader.wait(timeout=60) in (0, 1)  # 1 when it was cut short while writing
    assert b"Traceback" not in reader.stderr.read()
    reader.stderr.close()
    clash = shelflife("get", "deep/blob.bin", "-", "--json", cwd=home)
    assert clash.returncode == 2
    assert as_json(clash)["error"] == {
        "code": "bad_request",
        "message": "--json and - both want stdout",
        "hint": "give a file or folder with --json",
    }


def test_get_into_folders_and_with_the_umask(home: Path) -> None:
    (home / "report.pdf").write_bytes(b"pdf")
    shelflife("put", "report.pdf", "docs/report.pdf", cwd=home)
    made = with_umask("027", "get", "docs/report.pdf", "out/", cwd=home)
    assert made.returncode == 0, made.stderr
    assert (home / "out").is_dir()
    target = home / "out" / "report.pdf"
    assert target.read_bytes() == b"pdf"
    assert target.stat().st_mode & 0o777 == 0o640
    (home / "existing").mkdir()
    into = with_umask("002", "get", "docs/report.pdf", "existing", "--json", cwd=home)
    assert into.returncode == 0, into.stderr
    assert json.loads(into.stdout) == {
        "key": "docs/report.pdf",
        "path": "existing/report.pdf",
        "bytes": 3,
    }
    assert (home / "existing" / "report.pdf").stat().st_mode & 0o777 == 0o664
    renamed = with_umask("022", "get", "docs/report.pdf", "copy.pdf", cwd=home)
    assert renamed.returncode == 0
    assert (home / "copy.pdf").stat().st_mode & 0o777 == 0o644
    leftovers = [p.name for p in home.rglob("*.part")]
    assert leftovers == []


def test_a_failed_get_leaves_nothing_behind(home: Path) -> None:
    (home / "keep.txt").write_bytes(b"mine")
    failed = shelflife("get", "never/was", "keep.txt", cwd=home)
    assert failed.returncode == 1
    assert (home / "keep.txt").read_bytes() == b"mine"
    missing = shelflife("get", "never/was", "fresh/", cwd=home)
    assert missing.returncode == 1
    assert not any(p.name.endswith(".part") for p in home.rglob("*"))


# -- --json ------------------------------------------------------------------------------


def test_get_never_replaces_what_is_not_a_regular_file(home: Path) -> None:
    (home / "hello.txt").write_bytes(b"hello")
    assert shelflife("put", "hello.txt", cwd=home).returncode == 0
    os.mkfifo(home / "fifo")
    (home / "mine.txt").write_bytes(b"mine")
    (home / "link").symlink_to(home / "mine.txt")
    for dest in ("fifo", "link"):
        refused = shelflife("get", "hello.txt", dest, cwd=home)
        assert refused.returncode == 2, dest
        assert f"error: {dest} exists and is" in refused.stderr
        assert "hint:" in refused.stderr
    assert stat.S_ISFIFO((home / "fifo").lstat().st_mode)
    assert (home / "link").is_symlink()
    assert (home / "mine.txt").read_bytes() == b"mine"
    body = shelflife("get", "hello.txt", "fifo", "--json", cwd=home)
    assert as_json(body)["error"] == {
        "code": "bad_request",
        "message": "fifo exists and is not a regular file; shelflife writes only regular "
        "files, and would replace it: nothing was written",
        "hint": "give a new file name or a folder, or - to write to stdout (get KEY - > DEST)",
    }
    # a regular file is overwritten, as cp does; a link to a folder is that folder
    (home / "old.txt").write_bytes(b"old")
    assert shelflife("get", "hello.txt", "old.txt", cwd=home).returncode == 0
    assert (home / "old.txt").read_bytes() == b"hello"
    (home / "folder").mkdir()
    (home / "to-folder").symlink_to(home / "folder")
    assert shelflife("get", "hello.txt", "to-folder", cwd=home).returncode == 0
    assert (home / "folder" / "hello.txt").read_bytes() == b"hello"


def test_get_into_a_place_it_cannot_write_is_an_error_not_a_traceback(home: Path) -> None:
    (home / "hello.txt").write_bytes(b"hello")
    assert shelflife("put", "hello.txt", cwd=home).returncode == 0
    (home / "ro").write_bytes(b"a file, not a folder")
    for dest in ("/proc/x", "ro/x"):
        failed = shelflife("get", "hello.txt", dest, cwd=home)  # no Traceback (the helper)
        assert failed.returncode == 2, dest
        assert f"error: cannot write {dest}: " in failed.stderr
        assert "hint: " in failed.stderr
        body = shelflife("get", "hello.txt", dest, "--json", cwd=home)
        assert body.returncode == 2
        error = as_json(body)["error"]
        assert isinstance(error, dict)
        assert error["code"] == "bad_request"
    assert (home / "ro").read_bytes() == b"a file, not a folder"


def test_every_object_command_answers_json(home: Path) -> None:
    (home / "a.txt").write_bytes(b"abc")
    put = as_json(shelflife("put", "a.txt", "x/a.txt", "--json", cwd=home))
    assert put["bytes"] == 3
    assert "size" not in put
    url = as_json(shelflife("url", "x/a.txt", "--json", cwd=home))
    assert url["url"] == (home / "outputs" / "x" / "a.txt").as_uri()
    assert (url["key"], url["tier"]) == ("x/a.txt", "local")
    pin = as_json(shelflife("pin", "x/a.txt", "--json", cwd=home))
    assert pin == {"key": "x/a.txt", "tier": "local", "pinned": True, "until": None}
    unpin = as_json(shelflife("unpin", "x/a.txt", "--json", cwd=home))
    assert unpin["pinned"] is False
    recall = as_json(shelflife("recall", "x/a.txt", "--to", "cold", "--json", cwd=home))
    assert recall == {"key": "x/a.txt", "tier": "cold"}
    tokens = as_json(shelflife("token", "list", "--json", cwd=home))
    assert tokens == {"tokens": []}
    made = as_json(shelflife("token", "create", "ci", "--scopes", "read", "--json", cwd=home))
    assert (made["name"], made["scopes"]) == ("ci", ["read"])
    assert isinstance(made["token"], str)
    assert len(made["token"]) >= 32
    assert made["hash"] != made["token"]
    listed = as_json(shelflife("token", "list", "--json", cwd=home))
    assert listed == {"tokens": [{"name": "ci", "scopes": ["read"]}]}
    revoked = as_json(shelflife("token", "revoke", "ci", "--json", cwd=home))
    assert (revoked["name"], revoked["revoked"]) == ("ci", True)
    again = shelflife("token", "revoke", "ci", "--json", cwd=home)
    assert again.returncode == 2
    assert as_json(again)["error"]["message"] == "no token named 'ci' in the catalog"
    rm = as_json(shelflife("rm", "x/a.txt", "--json", cwd=home))
    assert rm == {"key": "x/a.txt", "tier": "cold", "deleted": True, "tiers": ["cold"]}
    written = as_json(shelflife("init", "other.toml", "--json", cwd=home))
    assert written == {"path": "other.toml", "written": True}


def test_rm_of_what_is_gone_exits_0(home: Path) -> None:
    plain = shelflife("rm", "never/was", cwd=home)
    assert plain.returncode == 0
    assert "never/was is already gone" in plain.stderr
    body = shelflife("rm", "never/was", "--json", cwd=home)
    assert (body.returncode, as_json(body)) == (0, {"key": "never/was", "deleted": False})
    # A link in a local tier is no object, but not "gone" either: refused, left alone.
    (home / "outputs").mkdir(exist_ok=True)
    (home / "elsewhere.txt").write_bytes(b"not the tier's")
    (home / "outputs" / "link").symlink_to(home / "elsewhere.txt")
    link = shelflife("rm", "link", "--json", cwd=home)
    assert link.returncode == 2
    error = as_json(link)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "invalid_key"
    assert "symbolic link" in error["message"]
    assert (home / "outputs" / "link").is_symlink()
    assert (home / "elsewhere.txt").read_bytes() == b"not the tier's"


REFERENCES = """
[databases.app]
url = "sqlite:///app.db"
[[references]]
database = "app"
table = "photos"
column = "path"
"""


def with_rows(home: Path, *values: str) -> None:
    """An application database whose rows point at ``values``, declared in the config."""
    with sqlite3.connect(home / "app.db") as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        conn.executemany("INSERT INTO photos (path) VALUES (?)", [(v,) for v in values])
    with (home / "shelflife.toml").open("a") as config:
        config.write(REFERENCES)


def test_rm_refuses_an_object_rows_point_at_unless_forced(home: Path) -> None:
    put_all(home, dict.fromkeys(["photos/002.jpg", "photos/003.jpg"], b"photo"))
    with_rows(home, "photos/002.jpg")
    refused = shelflife("rm", "photos/002.jpg", cwd=home)
    assert refused.returncode == 3
    assert "app.photos.path" in refused.stderr
    assert "--force" in refused.stderr
    assert (home / "outputs" / "photos" / "002.jpg").read_bytes() == b"photo"
    body = shelflife("rm", "photos/002.jpg", "--json", cwd=home)
    assert body.returncode == 3
    error = as_json(body)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "refused"
    assert shelflife("audit", cwd=home).returncode == 0
    # the Python API refuses the same delete by default
    shelf = Shelf.from_config(home / "shelflife.toml")
    with pytest.raises(RefusedError):
        shelf.delete("photos/002.jpg")
    assert shelf.delete("photos/003.jpg").key == "photos/003.jpg"  # no row: deleted
    forced = shelflife("rm", "photos/002.jpg", "--force", cwd=home)
    assert forced.returncode == 0, forced.stderr
    assert not (home / "outputs" / "photos" / "002.jpg").exists()
    assert shelflife("audit", cwd=home).returncode == 1  # the row now points at nothing


def test_rm_deletes_every_copy_so_no_older_one_comes_back(home: Path) -> None:
    (home / "old.txt").write_bytes(b"old bytes")
    (home / "new.txt").write_bytes(b"new bytes")
    assert shelflife("put", "old.txt", "x", "--tier", "cold", cwd=home).returncode == 0
    assert shelflife("put", "new.txt", "x", "--tier", "local", cwd=home).returncode == 0
    assert shelflife("get", "x", "-", cwd=home).stdout == "new bytes"
    text = shelflife("rm", "x", cwd=home)
    assert text.returncode == 0
    assert "deleted x from local, cold" in text.stderr
    gone = shelflife("get", "x", "-", cwd=home)
    assert (gone.returncode, gone.stdout) == (1, "")
    assert not (home / "outputs" / "x").exists()
    assert not (home / "cold" / "x").exists()
    put_all(home, {"y": b"old bytes"}, tier="cold")  # the same two copies again
    put_all(home, {"y": b"new bytes"}, tier="local")
    body = as_json(shelflife("rm", "y", "--json", cwd=home))
    assert body == {"key": "y", "tier": "local", "deleted": True, "tiers": ["local", "cold"]}
    # a row pointing at either copy keeps both
    put_all(home, {"z": b"old bytes"}, tier="cold")
    put_all(home, {"z": b"new bytes"}, tier="local")
    with_rows(home, "z")
    assert shelflife("rm", "z", cwd=home).returncode == 3
    assert (home / "outputs" / "z").exists()
    assert (home / "cold" / "z").exists()


def test_a_missing_object_exits_1_with_not_found(home: Path) -> None:
    for command in (["get", "never/was"], ["url", "never/was"], ["pin", "never/was"]):
        missing = shelflife(*command, "--json", cwd=home)
        assert missing.returncode == 1, command
        error = as_json(missing)["error"]
        assert isinstance(error, dict)
        assert error["code"] == "not_found"


def test_errors_under_json_are_objects_on_stdout(home: Path) -> None:
    usage = shelflife("ls", "--bogus", "--json", cwd=home)
    assert usage.returncode == 2
    error = as_json(usage)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "invalid_request"
    assert "--bogus" in error["message"]
    assert "shelflife ls --help" in error["hint"]

    missing = shelflife("get", "never/was", "--json", cwd=home)
    assert missing.returncode == 1
    error = as_json(missing)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "not_found"
    assert "never/was" in error["message"]
    assert error["hint"]
    assert "error:" in missing.stderr  # a person watching still reads it

    (home / "bad.toml").write_text("[tiers.local]\nurl = 'file://x'\ncapacity = 'huge'\n")
    config = shelflife("-c", "bad.toml", "stats", "--json", cwd=home)
    assert config.returncode == 2
    error = as_json(config)["error"]
    assert isinstance(error, dict)
    assert error["code"] == "config_error"
    assert "tiers.local.capacity" in error["message"]
    assert set(error) == {"code", "message", "hint"}


def aged(home: Path, names: list[str]) -> None:
    (home / "outputs").mkdir(exist_ok=True)
    old = time.time() - 86400 * 3
    for name in names:
        path = home / "outputs" / name
        path.write_bytes(b"y" * 10)
        os.utime(path, (old, old))


EXPIRE = '[[rules]]\nid = "old"\ntier = "local"\naction = "expire"\nafter = "1d"\n'


MIGRATE = '[[rules]]\nid = "cool"\ntier = "local"\naction = "migrate"\nto = "cold"\nafter = "1d"\n'


def test_a_plan_for_the_future_is_for_review_only(home: Path) -> None:
    (home / "shelflife.toml").write_text(CONFIG + EXPIRE + MIGRATE)
    (home / "f").write_bytes(b"x")
    assert shelflife("put", "f", "new", cwd=home).returncode == 0
    future = (utcnow() + timedelta(days=30)).isoformat()
    for command in (["plan"], ["enforce", "--dry-run"], ["expire", "--dry-run"]):
        shown = shelflife(*command, "--at", future, cwd=home)
        assert shown.returncode == 0, shown.stderr
        assert "for review only" in shown.stdout, command
        assert "shelflife apply plan-" not in shown.stdout
        plan_id = shown.stdout.split("saved as plan ")[1].split(",")[0]
        refused = shelflife("apply", plan_id, cwd=home)
        assert refused.returncode == 2
        assert "for review only" in refused.stderr
    aged(home, ["old"])
    now = shelflife("plan", cwd=home)  # a plan for now is one to apply
    assert "for review only" not in now.stdout
    assert "with 'shelflife apply plan-" in now.stdout


def test_max_delete_for_one_run_and_the_refusal_in_json(home: Path) -> None:
    (home / "shelflife.toml").write_text(CONFIG + EXPIRE)
    aged(home, ["a", "b", "c"])
    refused = shelflife("run", "--max-delete", "2", "--json", cwd=home)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    body = as_json(refused)
    assert body["status"] == "refused"  # the run's own fields …
    error = body["error"]  # … and the error every failed command's JSON has
    assert isinstance(error, dict)
    assert error["code"] == "refused"
    assert error["message"] == body["reason"]
    assert sorted(p.name for p in (home / "outputs").iterdir()) == ["a", "b", "c"]
    done = shelflife("run", "--max-delete", "3", "--transfers", "2", "--json", cwd=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert as_json(done)["status"] == "ok"
    assert list((home / "outputs").iterdir()) == []


@pytest.mark.parametrize("command", ["run", "gc", "enforce", "expire"])
def test_per_run_limits_reach_the_executor(
    home: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from shelflife.cli import run as cli_run
    from shelflife.cli.state import state

    config = str(home / "shelflife.toml")
    argv = ["-c", config, command, "--dry-run", "--json"]
    assert cli_run([*argv, "--transfers", "3", "--max-delete", "7"]) == 0
    assert state.shelf is not None
    assert (state.shelf.config.executor.concurrency, state.shelf.config.executor.max_delete) == (
        3,
        7,
    )
    state.shelf.close()
    assert cli_run(argv) == 0  # the next command reads the file again
    assert state.shelf is not None
    assert state.shelf.config.executor.concurrency == 8
    state.shelf.close()
    capsys.readouterr()


@pytest.mark.parametrize("command", ["run", "gc", "enforce", "expire", "apply"])
@pytest.mark.parametrize("flag", ["--transfers", "--max-delete"])
def test_per_run_limits_must_be_at_least_one(home: Path, command: str, flag: str) -> None:
    args = [command, "plan-x"] if command == "apply" else [command]
    result = shelflife(*args, flag, "0", "--json", cwd=home)
    assert result.returncode == 2
    error = as_json(result)["error"]
    assert isinstance(error, dict)
    assert flag in error["message"]
    assert "1" in error["message"]


# -- ls ----------------------------------------------------------------------------------


def test_ls_matches_string_prefixes_in_key_order(home: Path) -> None:
    keys = ["docs/2024/report.pdf", "docs/2024/reply.txt", "docs/2024/x.txt", "docs/2025"]
    put_all(home, dict.fromkeys(keys, b"z" * 2048))
    put_all(home, {"docs/2024/rep-cold": b"q"}, tier="cold")
    listing = as_json(shelflife("ls", "docs/2024/rep", "--json", cwd=home))
    objects = listing["objects"]
    assert isinstance(objects, list)
    assert [(o["key"], o["tier"], o["bytes"]) for o in objects] == [
        ("docs/2024/rep-cold", "cold", 1),
        ("docs/2024/reply.txt", "local", 2048),
        ("docs/2024/report.pdf", "local", 2048),
    ]
    assert all("size" not in o for o in objects)
    folder = as_json(shelflife("ls", "docs/2024/", "--json", cwd=home))["objects"]
    assert isinstance(folder, list)
    assert [o["key"] for o in folder][-1] == "docs/2024/x.txt"
    assert len(folder) == 4
    whole = as_json(shelflife("ls", "docs/202", "--json", cwd=home))["objects"]
    assert isinstance(whole, list)
    assert "docs/2025" in [o["key"] for o in whole]
    long = shelflife("ls", "docs/2024/repo", "--long", cwd=home)
    assert long.returncode == 0
    (line,) = long.stdout.splitlines()
    assert " 2.0 KB " in line
    assert line.endswith(" docs/2024/report.pdf")


def test_ls_json_is_valid_json_when_a_tier_fails(home: Path) -> None:
    (home / "a.txt").write_bytes(b"abc")
    assert shelflife("put", "a.txt", cwd=home).returncode == 0
    (home / "cold").write_bytes(b"a file where the tier's folder should be")
    failed = shelflife("ls", "--json", cwd=home)
    assert failed.returncode != 0
    body = as_json(failed)  # the error object alone: nothing half-written before it
    assert list(body) == ["error"]
    assert "cold" in str(body["error"])


def test_ls_hides_shelflifes_own_folders_unless_all(home: Path) -> None:
    (home / "outputs" / ".shelflife-trash" / "20260101T000000").mkdir(parents=True)
    (home / "outputs" / ".shelflife-trash" / "20260101T000000" / "old").write_bytes(b"t")
    (home / "f").write_bytes(b"v")
    shelflife("put", "f", "visible", cwd=home)
    shown = as_json(shelflife("ls", "--json", cwd=home))["objects"]
    assert isinstance(shown, list)
    assert [o["key"] for o in shown] == ["visible"]
    everything = as_json(shelflife("ls", "--all", "--json", cwd=home))["objects"]
    assert isinstance(everything, list)
    assert [o["key"] for o in everything] == [".shelflife-trash/20260101T000000/old", "visible"]
    with Shelf.open(home / "shelflife.toml") as shelf:
        assert [i.key for _, i in shelf.ls(internal=False)] == ["visible"]


@pytest.mark.s3
def test_ls_prefix_matching_on_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    tier = s3_tier(s3_endpoint, s3_bucket, "pre")
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in tier.items())
    (tmp_path / "shelflife.toml").write_text(
        f'[catalog]\nurl = "sqlite:///catalog.db"\n[tiers.cloud]\n{lines}\n'
    )
    keys = ["docs/2024/report.pdf", "docs/2024/x.txt", "docs/2024/rep/inner", "docsy"]
    put_all(tmp_path, dict.fromkeys(keys, b"s3"))
    listing = as_json(shelflife("ls", "docs/2024/rep", "--json", cwd=tmp_path))["objects"]
    assert isinstance(listing, list)
    assert [(o["key"], o["bytes"]) for o in listing] == [
        ("docs/2024/rep/inner", 2),
        ("docs/2024/report.pdf", 2),
    ]
    with Shelf.open(tmp_path / "shelflife.toml") as shelf:
        assert [i.key for _, i in shelf.ls("doc")] == [
            "docs/2024/rep/inner",
            "docs/2024/report.pdf",
            "docs/2024/x.txt",
            "docsy",
        ]


# -- check -------------------------------------------------------------------------------


def test_check_on_a_fresh_install_does_not_warn_about_the_schedule(home: Path) -> None:
    result = shelflife("check", "--json", cwd=home)
    assert result.returncode == 0, result.stdout
    checks = as_json(result)["checks"]
    assert isinstance(checks, list)
    (schedule,) = [c for c in checks if c["component"] == "schedule"]
    assert schedule["warning"] is False
    assert "has not succeeded" not in schedule["message"]
    assert "first is due" in schedule["message"]


def test_the_schedule_warns_once_a_slot_that_should_have_run_has_passed(home: Path) -> None:
    with Shelf.open(home / "shelflife.toml") as shelf:
        now = utcnow()
        assert check_schedule(shelf.context, now + timedelta(days=30)).warning is False
        shelf.scan()  # the first activity: slots count from here
        soon = check_schedule(shelf.context, now)
        assert soon.warning is False
        later = check_schedule(shelf.context, now + timedelta(days=2))
        assert later.warning is True
        assert "has not succeeded" in later.message
        assert later.hint
        assert "shelflife daemon" in later.hint
        shelf.run()
        assert check_schedule(shelf.context, utcnow()).warning is False
