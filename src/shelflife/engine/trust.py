"""Whether the references can be trusted for a run, and a snapshot of what they name.

Before any rule removes objects from a tier (collect, expire, or migrate, whose rewrite
must find every row), the run takes a fresh snapshot of every reference into the catalog
and works out what it forbids:

- refuse the run (exit 3, nothing done) when no reference source is declared and a rule
  collects orphans, when a source cannot be read, or when a source is empty while a tier
  a deleting rule covers holds objects;
- block a rule on a tier (the rule is refused there; other rules go on) when a source
  spells the tier's place in a way no tier declares, holds more than its
  ``max_unmatched`` of values that match no tier, or when a column no ``[[references]]``
  entry names holds references to the tier's objects (collect-orphans only).

At sweep time every batch is re-checked against the sources themselves
(:func:`still_referenced`), not only against the snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shelflife.base.progress import NullProgress, Progress
from shelflife.catalog import Catalog
from shelflife.catalog.schema import metadata as catalog_metadata
from shelflife.engine.context import Context
from shelflife.errors import RefusedError
from shelflife.model.actions import RULE_ACTIONS
from shelflife.model.locations import Location, Locator
from shelflife.model.naming import Naming, merge_pages
from shelflife.model.selection import TRASH_PREFIX
from shelflife.references.ordered import NotOrdered, SortedReferences, orderable, read_sorted
from shelflife.references.sources import (
    ParseReport,
    ReferenceSource,
    UndeclaredColumn,
    source_index,
    undeclared_columns,
)

log = logging.getLogger("shelflife.references")

CATALOG_TABLES = frozenset(catalog_metadata.tables) | {"alembic_version"}

# (rule action, tier) → why rules of that action may not act on that tier this time.
Blocks = dict[tuple[str, str], str]


def snapshot(
    context: Context,
    sources: Sequence[ReferenceSource],
    progress: Progress | None = None,
) -> tuple[int, ParseReport]:
    """Copy every location the sources name into the catalog; refuse if one is unreadable."""
    progress = progress or NullProgress()
    ledger = context.ledger
    report = ParseReport()
    now = context.clock()
    snapshot_id = ledger.begin_snapshot(now)
    progress.start("read references")
    try:
        for source in sources:
            index = source_index(context.config, source)
            counts = source.new_report()
            report.sources.append(counts)
            read = 0
            for references in source.iter_references(counts):
                named = {loc for ref in references for loc in ref.locations}
                ledger.add_refs(snapshot_id, sorted(named, key=_order), index)
                progress.advance(counts.rows - read)
                read = counts.rows
    except BaseException:
        ledger.fail_snapshot(snapshot_id)
        raise
    finally:
        progress.finish()
    ledger.finish_snapshot(snapshot_id, rows=report.rows, unmatched=report.unmatched, now=now)
    return snapshot_id, report


def read_references(
    context: Context,
    sources: Sequence[ReferenceSource],
    progress: Progress | None = None,
) -> tuple[SortedReferences | None, int | None, ParseReport]:
    """What the sources name, the fastest way that is sure: read in byte order for marking
    by merge (no copy in the catalog), or — for sources whose values cannot be read that
    way, or when they turn out not to sort — a snapshot in the catalog for its anti-join.
    Returns (the sorted references, or the snapshot's id; and what the reading found)."""
    progress = progress or NullProgress()
    why = orderable(sources)
    if context.config.executor.marking == "snapshot":
        why = "[executor] marking = 'snapshot'"
    if why is None:
        report = ParseReport()
        indexes = [source_index(context.config, source) for source in sources]
        progress.start("read references")
        try:
            found = read_sorted(sources, indexes, context.locator, report, progress.advance)
        except NotOrdered as exc:
            why = str(exc)
        else:
            return found, None, report
        finally:
            progress.finish()
    log.info("references copied into the catalog to be compared there: %s", why)
    snapshot_id, report = snapshot(context, sources, progress)
    return None, snapshot_id, report


def refresh(
    context: Context, sources: Sequence[ReferenceSource], progress: Progress | None = None
) -> ParseReport:
    """A fresh snapshot of the references for stats and the dashboard: per tier, what
    they name (by merge where they can be read in byte order; otherwise copied)."""
    found, _, report = read_references(context, sources, progress)
    if found is None:
        return report
    try:
        counts = count_named(context, found)
    finally:
        found.close()
    context.ledger.save_counts(
        context.clock(), rows=report.rows, unmatched=report.unmatched, counts=counts
    )
    return report


def count_named(context: Context, naming: Naming) -> dict[str, tuple[int, int]]:
    """Per tier, the live objects (and their bytes) some reference names, by merging its
    inventory in key order with ``naming`` (the snapshot's rule: a key named on another
    tier counts where that tier's inventory lacks it)."""
    counts: dict[str, tuple[int, int]] = {}
    trash = TRASH_PREFIX + "/"
    for tier in context.config.tiers:
        objects = bytes_ = 0
        pending: list[tuple[str, int, list[tuple[str, int]]]] = []
        pages = merge_pages(context.catalog.listed_state(tier), tier, naming)
        for page, named, elsewhere in pages:
            for row in page:
                key = row[0]
                if key in named:
                    if not key.startswith(trash):
                        objects += 1
                        bytes_ += row[1]
                elif elsewhere and key in elsewhere and not key.startswith(trash):
                    pending.append((key, row[1], elsewhere[key]))
            if len(pending) >= 1000:
                more, size = _named_elsewhere(context, pending)
                objects, bytes_, pending = objects + more, bytes_ + size, []
        if pending:
            more, size = _named_elsewhere(context, pending)
            objects, bytes_ = objects + more, bytes_ + size
        counts[tier] = (objects, bytes_)
    return counts


def _named_elsewhere(
    context: Context, batch: list[tuple[str, int, list[tuple[str, int]]]]
) -> tuple[int, int]:
    """Of objects (key, size, where else their key is named), those named on a tier that
    lacks the key: how many, and their bytes."""
    present = context.catalog.present(
        (other, key) for key, _, elsewhere in batch for other, _ in elsewhere
    )
    found = [
        size
        for key, size, elsewhere in batch
        if any((other, key) not in present for other, _ in elsewhere)
    ]
    return len(found), sum(found)


def check_sources(
    context: Context,
    sources: Sequence[ReferenceSource],
    tiers: Sequence[str],
    *,
    need_sources: bool,
) -> None:
    """Refuse (exit 3) unless the references can be trusted for deleting on ``tiers``:
    a source is declared (when ``need_sources``), each can be read, and none is empty
    while one of the tiers holds objects."""
    if need_sources and not sources:
        raise RefusedError(
            "no reference source is declared, so no object can be proven orphaned",
            hint="declare the columns that point at objects under [[references]]",
        )
    for source in sources:
        if source.count() == 0:
            for tier in tiers:
                held = context.ledger.objects_in_tier(tier)
                if held:
                    raise RefusedError(
                        f"reference source {source.label} is empty while tier {tier} holds "
                        f"{held} objects; refusing to treat them all as unreferenced",
                        hint="check the source's database and where clause; if it really is "
                        "empty, remove it from [[references]]",
                    )


def blocks(context: Context, report: ParseReport, collect_tiers: Sequence[str] = ()) -> Blocks:
    """What the references read into ``report`` forbid, per (rule action, tier) (see the
    module's docstring)."""
    found: Blocks = {}
    for tier, reason in report.distrusted(context.locator, list(context.config.tiers)).items():
        for kind in RULE_ACTIONS:
            found[(kind, tier)] = reason
    if collect_tiers:
        for finding in undeclared(context):
            for tier in finding.tiers:
                if tier in collect_tiers:
                    found.setdefault(("collect-orphans", tier), _undeclared_reason(finding))
    return found


def undeclared(context: Context) -> list[UndeclaredColumn]:
    """Columns that point at objects but are not declared (see :func:`undeclared_columns`)."""
    catalog = context.catalog
    return undeclared_columns(
        context.config,
        context.databases,
        context.locator,
        lambda location: catalog.get(location.tier, location.key) is not None,
        skip_tables=CATALOG_TABLES,
    )


def still_referenced(
    sources: Sequence[ReferenceSource],
    locator: Locator,
    catalog: Catalog,
    tier: str,
    keys: Sequence[str],
) -> set[str]:
    """The keys of ``tier`` some row of ``sources`` names right now: on this tier, as a
    bare key, or on another tier that lacks the key (the row would resolve here)."""
    found: set[str] = set()
    bare = set(locator.bare_tiers)
    for source in sources:
        for location in source.naming(keys):
            if location.key in found:
                continue
            if (
                location.tier == tier
                or location.tier in bare
                or catalog.get(location.tier, location.key) is None
            ):
                found.add(location.key)
    return found


def _order(location: Location) -> tuple[str, str]:
    return (location.tier, location.key)


def _undeclared_reason(finding: UndeclaredColumn) -> str:
    return (
        f"column {finding.label} holds values that point at objects of tier "
        f"{', '.join(finding.tiers)} (e.g. {finding.example[:120]!r}), but no [[references]] "
        f"entry names it. Declare it:\n{finding.declaration()}\nor, if it names no object, "
        "list it under [[ignore_columns]] with a reason"
    )
