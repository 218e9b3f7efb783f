"""A small JSONPath-like language for the strings of a JSON column that hold references.

Accepted: ``$`` (the document), ``.name`` or ``['name']`` (a member), ``[N]`` (an array
element), ``[*]`` or ``.*`` (every member or element), ``..name`` (``name`` at any depth).
``$.video``, ``$.images[*].url``, ``$..src``. A path selects values; the strings among
them, and the strings nested inside the selected objects and arrays, are the references.
Without a path every string of the document is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\.\.(?P<deep>[A-Za-z_][\w\-]*)
      | \.(?P<name>[A-Za-z_][\w\-]*)
      | \.\*(?P<dotstar>)
      | \[\s*\*\s*\](?P<star>)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*'(?P<quoted>[^']*)'\s*\]
      | \[\s*"(?P<dquoted>[^"]*)"\s*\]
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "name", "index", "any", "deep"
    name: str = ""
    index: int = 0


class JsonPathError(ValueError):
    pass


def compile_path(text: str) -> tuple[Step, ...]:
    """Parse a path; raise :class:`JsonPathError` saying where it goes wrong."""
    text = text.strip()
    if not text.startswith("$"):
        raise JsonPathError(f"{text!r} must start with '$' (e.g. '$.video', '$.images[*].url')")
    steps: list[Step] = []
    at = 1
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise JsonPathError(
                f"{text!r}: cannot read {text[at:]!r}; use .name, ['name'], [N], [*] or ..name"
            )
        groups = match.groupdict()
        if groups["deep"] is not None:
            steps.append(Step("deep", groups["deep"]))
        elif groups["name"] is not None:
            steps.append(Step("name", groups["name"]))
        elif groups["quoted"] is not None or groups["dquoted"] is not None:
            steps.append(Step("name", groups["quoted"] or groups["dquoted"] or ""))
        elif groups["index"] is not None:
            steps.append(Step("index", index=int(groups["index"])))
        else:
            steps.append(Step("any"))
        at = match.end()
    return tuple(steps)


def select(document: Any, steps: tuple[Step, ...]) -> Iterator[Any]:
    """The values ``steps`` select in ``document``."""
    current = [document]
    for step in steps:
        following: list[Any] = []
        for value in current:
            following.extend(_apply(value, step))
        current = following
    yield from current


def strings(document: Any, steps: tuple[Step, ...] | None = None) -> Iterator[str]:
    """Every string among (or inside) the values the path selects; all of them without one."""
    for value in [document] if steps is None else select(document, steps):
        yield from _all_strings(value)


def replace_strings(
    document: Any, steps: tuple[Step, ...] | None, change: Callable[[str], str]
) -> Any:
    """A copy of ``document`` with ``change`` applied to the strings :func:`strings` yields."""
    if steps is None or not steps:
        return _map_strings(document, change)
    return _replace_at(document, steps, change)


def _apply(value: Any, step: Step) -> Iterator[Any]:
    if step.kind == "name":
        if isinstance(value, dict) and step.name in value:
            yield value[step.name]
    elif step.kind == "index":
        if isinstance(value, list) and -len(value) <= step.index < len(value):
            yield value[step.index]
    elif step.kind == "any":
        if isinstance(value, dict):
            yield from value.values()
        elif isinstance(value, list):
            yield from value
    else:  # deep
        yield from _descend(value, step.name)


def _descend(value: Any, name: str) -> Iterator[Any]:
    if isinstance(value, dict):
        if name in value:
            yield value[name]
        for child in value.values():
            yield from _descend(child, name)
    elif isinstance(value, list):
        for child in value:
            yield from _descend(child, name)


def _all_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from _all_strings(child)
    elif isinstance(value, list):
        for child in value:
            yield from _all_strings(child)


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {name: _map_strings(child, change) for name, child in value.items()}
    if isinstance(value, list):
        return [_map_strings(child, change) for child in value]
    return value


def _replace_at(value: Any, steps: tuple[Step, ...], change: Callable[[str], str]) -> Any:
    if not steps:
        return _map_strings(value, change)
    step, rest = steps[0], steps[1:]
    if step.kind == "name":
        if isinstance(value, dict) and step.name in value:
            return {**value, step.name: _replace_at(value[step.name], rest, change)}
        return value
    if step.kind == "index":
        if isinstance(value, list) and -len(value) <= step.index < len(value):
            copy = list(value)
            copy[step.index] = _replace_at(copy[step.index], rest, change)
            return copy
        return value
    if step.kind == "any":
        if isinstance(value, dict):
            return {name: _replace_at(child, rest, change) for name, child in value.items()}
        if isinstance(value, list):
            return [_replace_at(child, rest, change) for child in value]
        return value
    # deep: the named member at this level, then the same search below
    if isinstance(value, dict):
        result = {}
        for name, child in value.items():
            child = _replace_at(child, steps, change)
            if name == step.name:
                child = _replace_at(child, rest, change)
            result[name] = child
        return result
    if isinstance(value, list):
        return [_replace_at(child, steps, change) for child in value]
    return value


__all__ = ["JsonPathError", "Step", "compile_path", "replace_strings", "select", "strings"]
