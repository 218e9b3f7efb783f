"""Prometheus metrics (DESIGN 5.5), all read from the catalog at scrape time.

- Gauges per tier and the health come from the last stored stats snapshot (taken after
  every run, by ``shelflife stats`` and ``stats --refresh``): a scrape never lists a store.
- Counters (``_total``) are cumulative values in the catalog's ``counters`` table, added to
  in the transaction that records a run's end: they survive restarts, and every process
  serving ``/metrics`` (several API workers, several machines) reports the same values.
- The run-duration histogram, the last success and the run in progress come from the run
  history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from shelflife.catalog.history import History
from shelflife.service.originals import buckets_view
from shelflife.service.records import current_stats
from shelflife.service.shelf import Shelf

STATUSES = ("healthy", "warning", "critical")
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)

# name → (type, help): every series shelflife exports, for the registry and the docs
METRICS: dict[str, tuple[str, str]] = {
    "shelflife_tier_bytes": ("gauge", "Bytes of the objects on a tier"),
    "shelflife_tier_capacity_bytes": ("gauge", "A tier's capacity in bytes"),
    "shelflife_tier_usage_ratio": ("gauge", "Used fraction of a tier's capacity"),
    "shelflife_tier_high_watermark_ratio": ("gauge", "Usage above which a tier is migrated"),
    "shelflife_tier_low_watermark_ratio": ("gauge", "Usage a migration brings a tier down to"),
    "shelflife_tier_objects": ("gauge", "Objects on a tier"),
    "shelflife_referenced_objects": ("gauge", "Objects some reference points at"),
    "shelflife_orphan_objects": ("gauge", "Objects no reference points at"),
    "shelflife_orphan_bytes": ("gauge", "Bytes of the objects no reference points at"),
    "shelflife_quarantined_bytes": ("gauge", "Bytes held in quarantine on a tier"),
    "shelflife_health": ("gauge", "1 for the current health status"),
    "shelflife_stats_timestamp_seconds": ("gauge", "When the figures above were taken"),
    "shelflife_actions": ("counter", "Actions by kind and outcome (done, skipped, failed)"),
    "shelflife_moved_bytes": ("counter", "Bytes migrated between tiers"),
    "shelflife_deleted_bytes": ("counter", "Bytes deleted, by tier and reason"),
    "shelflife_runs": ("counter", "Runs by command and final status"),
    "shelflife_run_duration_seconds": ("histogram", "How long runs took"),
    "shelflife_last_success_timestamp_seconds": ("gauge", "End of the last successful run"),
    "shelflife_run_in_progress": ("gauge", "1 while a run is in progress"),
}


# [metrics] compat = "heimdall": the MinIO clean-up's gauges, GB per bucket (name → (help,
# field of the buckets view)); see shelflife.service.originals for what a bucket is.
HEIMDALL_METRICS: dict[str, tuple[str, str]] = {
    "heimdall_storage_disk_usage_gb": ("Disk space used, in GB", "disk_usage_gb"),
    "heimdall_storage_bucket_size_gb": ("Size of the objects in a bucket, in GB", "total_size_gb"),
    "heimdall_storage_orphan_files": ("Objects no reference points at", "orphan_objects"),
    "heimdall_storage_orphan_size_gb": ("Size of the orphaned objects, in GB", "orphan_size_gb"),
    "heimdall_storage_total_objects": ("Objects in a bucket", "total_objects"),
    "heimdall_storage_referenced_objects": (
        "Objects some reference points at",
        "referenced_objects",
    ),
}


def exported_names() -> set[str]:
    """Every sample name /metrics can carry (with _total, _bucket, _sum, _count)."""
    names: set[str] = set()
    for name, (kind, _) in METRICS.items():
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


class CatalogCollector:
    """A prometheus-client collector reading everything from the catalog per scrape."""

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf

    def describe(self) -> list[Metric]:
        return []  # nothing is known before the first scrape

    def collect(self) -> Iterator[Metric]:
        taken_at, stats = current_stats(self.shelf.context)
        yield from _tier_gauges(stats)
        if self.shelf.config.metrics.compat == "heimdall":
            yield from _heimdall_gauges(buckets_view(self.shelf.config, stats))
        health = GaugeMetricFamily(
            "shelflife_health", METRICS["shelflife_health"][1], labels=["status"]
        )
        current = stats.get("health", {}).get("status", "healthy")
        for status in STATUSES:
            health.add_metric([status], 1.0 if status == current else 0.0)
        yield health
        yield GaugeMetricFamily(
            "shelflife_stats_timestamp_seconds",
            METRICS["shelflife_stats_timestamp_seconds"][1],
            value=taken_at,
        )
        history = History(self.shelf.catalog.engine)
        yield from _counters(history.counters())
        durations = history.durations()
        buckets = [
            (str(bound), float(sum(1 for d in durations if d <= bound)))
            for bound in DURATION_BUCKETS
        ]
        buckets.append(("+Inf", float(len(durations))))
        yield HistogramMetricFamily(
            "shelflife_run_duration_seconds",
            METRICS["shelflife_run_duration_seconds"][1],
            buckets=buckets,
            sum_value=float(sum(durations)),
        )
        last = history.last_success()
        if last is not None:
            yield GaugeMetricFamily(
                "shelflife_last_success_timestamp_seconds",
                METRICS["shelflife_last_success_timestamp_seconds"][1],
                value=last.timestamp(),
            )
        yield GaugeMetricFamily(
            "shelflife_run_in_progress",
            METRICS["shelflife_run_in_progress"][1],
            value=1.0 if history.running() else 0.0,
        )


def _tier_gauges(stats: dict[str, Any]) -> Iterator[Metric]:
    fields = {
        "shelflife_tier_bytes": "bytes",
        "shelflife_tier_capacity_bytes": "capacity",
        "shelflife_tier_usage_ratio": "usage_ratio",
        "shelflife_tier_high_watermark_ratio": "high_watermark",
        "shelflife_tier_low_watermark_ratio": "low_watermark",
        "shelflife_tier_objects": "objects",
        "shelflife_referenced_objects": "referenced_objects",
        "shelflife_orphan_objects": "orphan_objects",
        "shelflife_orphan_bytes": "orphan_bytes",
        "shelflife_quarantined_bytes": "quarantined_bytes",
    }
    tiers: dict[str, Any] = stats.get("tiers", {})
    for name, field in fields.items():
        family = GaugeMetricFamily(name, METRICS[name][1], labels=["tier"])
        for tier, figures in tiers.items():
            value = figures.get(field)
            if field.endswith("_watermark") and figures.get("capacity") is None:
                value = None  # a tier without capacity has no watermark
            if value is not None:  # no capacity, or no reference snapshot yet: no sample
                family.add_metric([tier], float(value))
        yield family


def _heimdall_gauges(buckets: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    for name, (text, field) in HEIMDALL_METRICS.items():
        family = GaugeMetricFamily(name, text, labels=["bucket"])
        for bucket, figures in buckets.items():
            if figures.get(field) is not None:  # no reference snapshot yet: no sample
                family.add_metric([bucket], float(figures[field]))
        yield family


def _counters(values: list[tuple[str, dict[str, str], int]]) -> Iterator[Metric]:
    by_name: dict[str, list[tuple[dict[str, str], int]]] = {}
    for name, labels, value in values:
        by_name.setdefault(name, []).append((labels, value))
    label_names = {
        "shelflife_actions": ["action", "outcome"],
        "shelflife_moved_bytes": ["from", "to"],
        "shelflife_deleted_bytes": ["tier", "reason"],
        "shelflife_runs": ["command", "status"],
    }
    for name, names in label_names.items():
        family = CounterMetricFamily(name, METRICS[name][1], labels=names)
        for labels, value in by_name.get(name, []):
            family.add_metric([labels.get(label, "") for label in names], float(value))
        yield family


def registry(shelf: Shelf) -> CollectorRegistry:
    result = CollectorRegistry(auto_describe=False)
    result.register(CatalogCollector(shelf))
    return result


def render(shelf: Shelf) -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(registry(shelf))
