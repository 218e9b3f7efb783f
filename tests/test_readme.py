"""The README shows the tool as it is: every ``shelflife …`` command and every flag in its
code blocks and tables exists in the CLI (read from the Typer app itself), and it cites
no document outside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main

from shelflife.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FLAG = re.compile(r"(?<![\w/=-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")
COMMAND = re.compile(
    r"(?<![\w.-])shelflife((?:\s+--?[a-z][\w-]*(?:\s+[A-Za-z0-9_./]+)?)*)\s+([a-z][\w-]*)"
)


def cli() -> Any:
    return typer.main.get_command(app)


def flags_of(command: Any) -> set[str]:
    found = {"--help"}
    for param in command.params:
        found.update(getattr(param, "opts", []))
        found.update(getattr(param, "secondary_opts", []))
    return {f for f in found if f.startswith("-")}


def all_flags(command: Any) -> set[str]:
    found = flags_of(command)
    for sub in getattr(command, "commands", {}).values():
        found |= all_flags(sub)
    return found


def code_texts(text: str) -> list[str]:
    """The README's code blocks (line by line) and the code spans of its table rows."""
    pieces: list[str] = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL):
        pieces += block.splitlines()
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for line in without_blocks.splitlines():
        if line.lstrip().startswith("|"):
            pieces += re.findall(r"`([^`]+)`", line)
    return pieces


def resolve(root: Any, words: list[str]) -> tuple[Any, str]:
    """The command ``words`` name (``['policy', 'export']``), and its name."""
    command, name = root, "shelflife"
    for word in words:
        commands = getattr(command, "commands", None)
        if commands is None:
            break
        assert word in commands, f"`{name} {word}` is not a command; there are {sorted(commands)}"
        command, name = commands[word], f"{name} {word}"
    return command, name


def check_piece(root: Any, piece: str, everything: set[str]) -> list[str]:
    """What ``piece`` shows that the CLI lacks."""
    problems: list[str] = []
    # `shelflife gc … · gc --mark ID`: each part after a dot names a command of its own.
    parts = [p.strip() for p in piece.split(" · ")]
    context: Any = None
    for part in parts:
        match = COMMAND.search(part)
        first = part.split()[0] if part.split() else ""
        if match:
            words = [match.group(2)]
            rest = part[match.end() :].split()
            offset = 0
        elif context is not None and first in root.commands:
            words, rest, offset = [first], part.split()[1:], 0
        else:
            # Flags alone (`--no-scan`, `--rule ID`) are shelflife's; another program's
            # command line (`celery -A …`) is not checked.
            if context is None and part.startswith("-"):
                unknown = set(FLAG.findall(part)) - everything
                problems += [f"{flag} (in `{piece}`)" for flag in sorted(unknown)]
            continue
        if words[0] not in root.commands:
            problems.append(f"`shelflife {words[0]}` (in `{piece}`) is not a command")
            continue
        command = root.commands[words[0]]
        while getattr(command, "commands", None) and offset < len(rest):
            if rest[offset] in command.commands:
                words.append(rest[offset])
                command = command.commands[rest[offset]]
            offset += 1
        command, name = resolve(root, words)
        context = command
        allowed = flags_of(command) | flags_of(root)
        global_part = match.group(1) if match else ""
        for flag in FLAG.findall(global_part):
            if flag not in flags_of(root):
                problems.append(f"global option {flag} (in `{piece}`)")
        for flag in FLAG.findall(" ".join(rest)):
            if flag not in allowed:
                problems.append(f"`{name}` has no {flag} (in `{piece}`)")
    return problems


def test_every_command_and_flag_the_readme_shows_exists() -> None:
    root = cli()
    everything = all_flags(root)
    problems: list[str] = []
    checked = 0
    for piece in code_texts(README.read_text(encoding="utf-8")):
        if re.match(r"\s*(from|import)\s", piece):  # Python
            continue
        if "shelflife" in piece or FLAG.search(piece):
            checked += 1
            problems += check_piece(root, piece, everything)
    assert checked > 30, "the README's commands were not found: is the parser still right?"
    assert not problems, "the README shows what the CLI lacks:\n" + "\n".join(problems)


def test_the_check_itself_catches_a_made_up_flag_and_command() -> None:
    root = cli()
    everything = all_flags(root)
    assert check_piece(root, "shelflife ls [--tier T] [--no-such-flag]", everything)
    assert check_piece(root, "shelflife frobnicate KEY", everything)
    assert check_piece(root, "shelflife token create NAME --tier x", everything)
    assert not check_piece(
        root, "shelflife --config x.toml token create NAME --scopes r", everything
    )
    assert not check_piece(root, "shelflife gc [--dry-run] · gc --mark PLAN_ID [--yes]", everything)


def test_the_readme_cites_no_document_outside_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    assert not re.findall(r"DESIGN\s*(?:§|\d|I\d)", text)
    for link in re.findall(r"`(docs/[\w./-]+|deploy/[\w./-]+)`", text):
        assert (ROOT / link).exists(), f"the README names {link}, which does not exist"
    assert "schedulers to come" not in text
