"""What a rule selects: the one selection function every command and interface uses.

A rule selects an object on a tier when the object passes the rule's filter (prefix,
suffix, tags, size bounds) and is old enough (``after`` for migrate and expire rules,
``grace`` for collect-orphans), counted from the instant the rule's ``age`` names
(:func:`aged_from`). The planner asks an inventory for candidates with a
:class:`Selection` (an inventory may narrow what it yields with it) and then checks
:func:`selects` itself; the executor checks :func:`selects` again before acting, so a plan
applied later acts only on what its rule still selects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from shelflife.config.model import AgeBasis, RuleConfig

TRASH_PREFIX = ".shelflife-trash"


class ObjectView(NamedTuple):
    """What the planner knows about one object (a tuple: the planner reads one per
    candidate, a million in a large plan, and a tuple is the cheapest record to build)."""

    key: str
    size: int
    modified: datetime
    accessed: datetime | None = None
    etag: str | None = None
    created: datetime | None = None  # unknown: ``modified`` stands for it
    arrived: datetime | None = None  # unknown: ``modified`` stands for it
    tags: Mapping[str, str] | None = None
    pinned: bool = False
    leased: bool = False
    refs: frozenset[int] = frozenset()  # positions under [[references]] of sources naming it


@dataclass(frozen=True, slots=True)
class TierState:
    """A tier's usage as the planner starts."""

    name: str
    used: int = 0  # bytes counted against capacity
    capacity: int | None = None
    high: float = 0.8
    low: float = 0.7
    objects: int = 0  # live objects, for max_fraction
    versioned: bool = False


@dataclass(frozen=True, slots=True)
class Selection:
    """What a rule asks of a tier; an inventory may use it to narrow what it yields.

    The planner checks every condition itself, so an inventory may ignore any of them.
    """

    prefix: str | None = None
    suffix: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    before: datetime | None = None  # the instant ``age`` names is earlier than this
    age: AgeBasis = "modified"
    unreferenced: bool = False
    # The rule needs the sources naming each object (expire, collect-orphans); it takes
    # every object it selects, so the order they come in is free (key order will do).
    named: bool = False


def aged_from(basis: AgeBasis, obj: ObjectView) -> datetime:
    """The instant an object's age counts from, for a rule's ``age`` basis."""
    if basis == "created":
        return obj.created or obj.modified
    if basis == "arrived":
        return obj.arrived or obj.modified
    if basis == "last-access":
        return obj.accessed or obj.modified
    return obj.modified


def cutoff(rule: RuleConfig, now: datetime) -> datetime | None:
    """Objects whose age (:func:`aged_from`) counts from before this instant are old
    enough for ``rule`` (None: any age)."""
    if rule.action == "collect-orphans":
        return now - rule.grace
    return None if rule.after is None else now - rule.after


def selection(rule: RuleConfig, now: datetime) -> Selection:
    """The part of the rule an inventory can apply while reading (see :class:`Selection`)."""
    return Selection(
        prefix=rule.filter.prefix,
        suffix=rule.filter.suffix,
        min_size=rule.filter.min_size if rule.min_size is None else rule.min_size,
        max_size=rule.filter.max_size,
        before=cutoff(rule, now),
        age=rule.age_basis,
        unreferenced=rule.action == "collect-orphans",
        named=rule.action in ("expire", "collect-orphans"),
    )


def matches(rule: RuleConfig, obj: ObjectView) -> bool:
    """Whether ``obj`` passes the rule's filter (prefix, suffix, tags, sizes)."""
    chosen = rule.filter
    if chosen.prefix and not obj.key.startswith(chosen.prefix):
        return False
    if chosen.suffix and not obj.key.endswith(chosen.suffix):
        return False
    min_size = chosen.min_size if rule.min_size is None else rule.min_size
    if min_size is not None and obj.size < min_size:
        return False
    if chosen.max_size is not None and obj.size > chosen.max_size:
        return False
    if chosen.tags:
        tags = obj.tags or {}
        if any(tags.get(name) != value for name, value in chosen.tags.items()):
            return False
    return not obj.key.startswith(TRASH_PREFIX + "/")


def selects(rule: RuleConfig, obj: ObjectView, now: datetime) -> bool:
    """Whether ``rule`` selects ``obj`` at ``now``: its filter and its age."""
    if not matches(rule, obj):
        return False
    before = cutoff(rule, now)
    return before is None or aged_from(rule.age_basis, obj) < before


def rule_tiers(rule: RuleConfig, tiers: Sequence[str]) -> list[str]:
    """The tiers a rule acts on (``*``: every tier but its destination)."""
    if rule.tier != "*":
        return [rule.tier]
    return [tier for tier in tiers if tier != rule.to]
