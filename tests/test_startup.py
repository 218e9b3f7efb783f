"""Start-up: help and ``init`` load only what they need (an import contract checked on
``sys.modules`` in a fresh interpreter, never a timing), and the lazy package
attributes still behave like eager ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.startup import CONTRACT, HEAVY, loaded_modules, offending


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))}


@pytest.mark.parametrize(("argv", "banned"), CONTRACT, ids=[" ".join(a) for a, _ in CONTRACT])
def test_help_and_init_import_nothing_heavy(
    argv: list[str], banned: tuple[str, ...], tmp_path: Path
) -> None:
    modules = loaded_modules(argv, tmp_path, environment())
    assert "shelflife.cli" in modules  # the probe did run the CLI
    assert offending(modules, banned) == []
    if argv == ["init"]:
        assert (tmp_path / "shelflife.toml").is_file()


def test_a_command_that_works_still_loads_the_service(tmp_path: Path) -> None:
    """The probe sees imports: ``ls`` opens the shelf, so the heavy modules do load."""
    modules = loaded_modules(["ls"], tmp_path, environment())
    assert {"shelflife.service.shelf", "sqlalchemy"} <= set(modules)
    assert offending(modules, HEAVY)


def test_help_lists_each_command_with_its_whole_first_paragraph(tmp_path: Path) -> None:
    env = {**environment(), "COLUMNS": "60"}
    result = subprocess.run(
        [sys.executable, "-c", "from shelflife.cli import main; main()", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "plan Scan, then show what the rules call for now (or --at an instant); change " in text
    assert "gc `run` restricted to the collect-orphans rules: objects no reference points at." in (
        text
    )
    assert "[schedule] entries" in text
    assert "\\[" not in text  # no Rich escapes left
    listing = result.stdout.split("Commands:")[1]
    assert "..." not in listing  # no description cut short


def test_package_attributes_load_on_first_use() -> None:
    code = (
        "import sys, shelflife\n"
        "assert 'shelflife.service.shelf' not in sys.modules\n"
        "from shelflife import Shelf, StoredObject\n"
        "from shelflife.service.shelf import Shelf as Real\n"
        "assert Shelf is Real and shelflife.Shelf is Real and StoredObject.__name__\n"
        "assert {'Shelf', 'StoredObject', 'ShelflifeError'} <= set(dir(shelflife))\n"
        "try:\n"
        "    shelflife.Nothing\n"
        "except AttributeError as exc:\n"
        "    assert 'Nothing' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
