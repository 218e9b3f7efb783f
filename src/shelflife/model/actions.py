"""The records plans and runs are made of: actions, skips, failures, refusals.

Their ``as_json`` forms are the DESIGN 5.2 contract (fields may be added, never renamed);
fields left unset are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class ActionKind(StrEnum):
    """What a plan or run does to one object. Each kind belongs to one rule action
    (:attr:`rule_action`): the one place the two vocabularies meet."""

    MIGRATE = "migrate"
    EXPIRE = "expire"
    DELETE_ORPHAN = "delete-orphan"
    QUARANTINE = "quarantine"
    PURGE_QUARANTINE = "purge-quarantine"

    @property
    def rule_action(self) -> str:
        """The ``[[rules]] action`` that plans this kind."""
        return _RULE_ACTION[self]

    @property
    def deletes(self) -> bool:
        """Whether it removes the object from its tier for good (or into quarantine)."""
        return self in DELETING

    @classmethod
    def of_rule(cls, action: str, mode: str = "delete") -> ActionKind:
        """The kind a rule with ``action`` (and orphan ``mode``) plans."""
        if action == "collect-orphans":
            return cls.QUARANTINE if mode == "quarantine" else cls.DELETE_ORPHAN
        return cls(action)


RULE_ACTIONS = ("migrate", "expire", "collect-orphans")
_RULE_ACTION = {
    ActionKind.MIGRATE: "migrate",
    ActionKind.EXPIRE: "expire",
    ActionKind.DELETE_ORPHAN: "collect-orphans",
    ActionKind.QUARANTINE: "collect-orphans",
    ActionKind.PURGE_QUARANTINE: "collect-orphans",
}
DELETING = frozenset({ActionKind.EXPIRE, ActionKind.DELETE_ORPHAN, ActionKind.QUARANTINE})

# The commands that are ``run`` restricted to one rule action (DESIGN 5.2).
COMMAND_ACTIONS: dict[str, tuple[str, ...]] = {
    "run": RULE_ACTIONS,
    "apply": RULE_ACTIONS,
    "gc": ("collect-orphans",),
    "enforce": ("migrate",),
    "expire": ("expire",),
}


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
    expiration does to the rows that point at the object, per reference source; ``age``
    and ``aged_from`` name the instant the rule counted the object's age from (its basis:
    ``created``, ``modified``, ``last-access`` or ``arrived``).
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
    age: str | None = None
    aged_from: datetime | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Action:
        modified = body.get("modified")
        aged_from = body.get("aged_from")
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
            age=body.get("age"),
            aged_from=None if aged_from is None else datetime.fromisoformat(aged_from),
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
