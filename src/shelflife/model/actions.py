"""The records plans and runs are made of: actions, skips, failures, refusals.

Their ``as_json`` forms are the DESIGN 5.2 contract (fields may be added, never renamed);
fields left unset are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

DELETING = frozenset({"expire", "delete-orphan", "quarantine"})


class _Record:
    """A value printed as one JSON object, field by field, unset fields left out."""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if value is None:
                continue
            body[item.name] = value.isoformat() if isinstance(value, datetime) else value
        return body


@dataclass(slots=True)
class Action(_Record):
    """One thing done (or planned) to one object.

    ``action`` is ``migrate``, ``expire``, ``delete-orphan``, ``quarantine`` or
    ``purge-quarantine``. ``etag`` and ``modified`` are what the object was when planned,
    so that applying the plan later can tell whether it changed; ``rows`` says what an
    expiration does to the rows that point at the object, per reference source.
    """

    action: str
    rule: str
    tier: str
    key: str
    bytes: int
    to: str | None = None
    etag: str | None = None
    modified: datetime | None = None
    rows: dict[str, str] | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Action:
        modified = body.get("modified")
        return cls(
            action=str(body["action"]),
            rule=str(body["rule"]),
            tier=str(body["tier"]),
            key=str(body["key"]),
            bytes=int(body["bytes"]),
            to=body.get("to"),
            etag=body.get("etag"),
            modified=None if modified is None else datetime.fromisoformat(modified),
            rows=body.get("rows"),
        )


@dataclass(slots=True)
class Skip(_Record):
    """An object a rule selected but did not act on, and why."""

    rule: str
    tier: str
    key: str
    reason: str


@dataclass(slots=True)
class Failure(_Record):
    rule: str
    tier: str
    key: str
    error: str


@dataclass(slots=True)
class Refusal(_Record):
    """A rule that will not act at all this time, and why (exit code 3)."""

    rule: str
    tier: str
    reason: str


def totals(actions: Iterable[Action]) -> dict[str, dict[str, int]]:
    """``{action: {"objects": n, "bytes": b}}``."""
    result: dict[str, dict[str, int]] = {}
    for action in actions:
        entry = result.setdefault(action.action, {"objects": 0, "bytes": 0})
        entry["objects"] += 1
        entry["bytes"] += action.bytes
    return result
