"""``shelflife audit``: rows whose value points at an object that does not exist.

Existence is judged by the inventory, so run it after a scan (the CLI scans first). With
``repair``, a row whose object is found on another tier under the same key is rewritten
to that tier's spelling, guarded by ``WHERE column = old value`` so a row the application
changed meanwhile is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from shelflife.locations import Location
from shelflife.references import ParseReport, ReferenceSource, SourceUnreadable

if TYPE_CHECKING:
    from shelflife.shelf import Shelf


@dataclass
class Dangling:
    source: str
    value: str
    tier: str
    key: str
    found_on: str | None
    repaired: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "value": self.value,
            "tier": self.tier,
            "key": self.key,
            "found_on": self.found_on,
            "repaired": self.repaired,
        }


@dataclass
class AuditReport:
    rows: int = 0
    dangling: list[Dangling] = field(default_factory=list)
    unmatched: int = 0
    unmatched_examples: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "dangling": [d.as_json() for d in self.dangling],
            "repaired": sum(d.repaired for d in self.dangling),
            "unmatched_references": {"count": self.unmatched, "examples": self.unmatched_examples},
        }


def audit_references(shelf: Shelf, *, repair: bool) -> AuditReport:
    report = AuditReport()
    for source in shelf.sources():
        parse = ParseReport()
        for values in source.iter_values():
            located = []
            for value in values:
                location = shelf.locator.parse(value)
                if location is None:
                    parse.note_unmatched(value)
                else:
                    located.append((value, location))
            report.rows += len(values)
            _check_batch(shelf, source, located, report, repair)
        report.unmatched += parse.unmatched
        report.unmatched_examples += parse.examples[: 5 - len(report.unmatched_examples)]
    return report


def _check_batch(
    shelf: Shelf,
    source: ReferenceSource,
    located: list[tuple[str, Location]],
    report: AuditReport,
    repair: bool,
) -> None:
    present = shelf.catalog.present((loc.tier, loc.key) for _, loc in located)
    missing = [(value, loc) for value, loc in located if (loc.tier, loc.key) not in present]
    if not missing:
        return
    elsewhere = shelf.catalog.present(
        (tier, loc.key) for _, loc in missing for tier in shelf.config.tiers if tier != loc.tier
    )
    for value, loc in missing:
        found_on = next(
            (
                tier
                for tier in shelf.config.tiers
                if tier != loc.tier and (tier, loc.key) in elsewhere
            ),
            None,
        )
        entry = Dangling(source.label, value, loc.tier, loc.key, found_on)
        if repair and found_on is not None:
            entry.repaired = _repoint(
                source, value, shelf.locator.render(Location(found_on, loc.key))
            )
        report.dangling.append(entry)


def _repoint(source: ReferenceSource, old: str, new: str) -> bool:
    statement = update(source.table).where(source.column == old).values({source.column.name: new})
    try:
        with source.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)
    except SQLAlchemyError as exc:
        raise SourceUnreadable(f"cannot repoint rows in {source.label}: {exc}") from None
