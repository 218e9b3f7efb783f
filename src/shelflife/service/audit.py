"""``shelflife audit``: rows whose value points at an object that does not exist.

Existence is judged by the inventory, so run it after a scan (the CLI scans first). With
``repair``, a row whose object is found on another tier under the same key is rewritten
to that tier's spelling, guarded by ``WHERE column = old value`` so a row the application
changed meanwhile is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from shelflife.model.locations import Location
from shelflife.references.sources import Reference, ReferenceSource, SourceUnreadable

if TYPE_CHECKING:
    from shelflife.engine.context import Context


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


def audit_references(context: Context, *, repair: bool) -> AuditReport:
    """Every reference in every source, read by the one resolver: a reference dangles when
    none of the locations it may name holds an object (in the inventory)."""
    report = AuditReport()
    for source in context.sources():
        counts = source.new_report()
        for references in source.iter_references(counts):
            _check_batch(context, source, [r for r in references if r.locations], report, repair)
        report.rows += counts.rows
        report.unmatched += counts.unmatched
        report.unmatched_examples += counts.examples[: 5 - len(report.unmatched_examples)]
    return report


def _check_batch(
    context: Context,
    source: ReferenceSource,
    references: list[Reference],
    report: AuditReport,
    repair: bool,
) -> None:
    tiers = list(context.config.tiers)
    wanted = {
        (tier, location.key) for ref in references for location in ref.locations for tier in tiers
    }
    present = context.catalog.present(wanted)
    moves: dict[Location, Location] = {}
    for ref in references:
        if any((loc.tier, loc.key) in present for loc in ref.locations):
            continue
        first = ref.locations[0]
        found_on = next(
            (
                tier
                for loc in ref.locations
                for tier in tiers
                if tier != loc.tier and (tier, loc.key) in present
            ),
            None,
        )
        entry = Dangling(source.label, ref.text, first.tier, first.key, found_on)
        if repair and found_on is not None:
            moves[first] = Location(found_on, first.key)
            entry.repaired = True
        report.dangling.append(entry)
    if moves:
        try:
            with source.engine.begin() as conn:
                changed = source.rewrite(conn, moves)
        except SQLAlchemyError as exc:
            raise SourceUnreadable(f"cannot repoint rows in {source.label}: {exc}") from None
        if not changed:  # the rows changed meanwhile: nothing was repaired
            for entry in report.dangling:
                if Location(entry.tier, entry.key) in moves:
                    entry.repaired = False
