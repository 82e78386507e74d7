"""The metric catalogue: generated from the registry, complete, conventional, documented."""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

import stream_migrator
from stream_migrator.observability.catalogue import catalogue, catalogue_table, series_names

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


def test_catalogue_imports_every_module() -> None:
    """Metrics defined in any package (reconcile/, rollout/, ...) are registered before the walk."""
    catalogue()
    modules = {
        m.name for m in pkgutil.walk_packages(stream_migrator.__path__, "stream_migrator.")
    } - {"stream_migrator.__main__"}
    assert modules - set(sys.modules) == set()


def test_catalogue_lists_what_operators_need() -> None:
    """Throughput, latency, lag (per partition, seconds), batches, retries, pauses, health."""
    names = {info.name for info in catalogue()}
    for needed in (
        "sm_events_captured_total",
        "sm_events_applied_total",
        "sm_events_quarantined_total",
        "sm_apply_seconds",
        "sm_end_to_end_seconds",
        "sm_consumer_lag_events",
        "sm_consumer_partition_lag_events",
        "sm_consumer_lag_seconds",
        "sm_capture_lag_seconds",
        "sm_batch_events",
        "sm_write_retries_total",
        "sm_backpressure_pauses_total",
        "sm_ready",
        "sm_last_progress_timestamp_seconds",
    ):
        assert needed in names, f"{needed} missing from the catalogue"


def test_every_metric_is_labelled_by_migration_and_documented() -> None:
    """Every sm_* metric carries the migration label and a help text."""
    for info in catalogue():
        assert "migration" in info.labels, info.name
        assert len(info.help) > 10, info.name


def test_metric_names_follow_prometheus_conventions() -> None:
    """Counters end in _total; histograms of time end in _seconds; nothing else uses _total."""
    for info in catalogue():
        assert info.name.startswith("sm_")
        assert info.name.endswith("_total") == (info.kind == "counter"), info.name
        if info.kind == "histogram":
            assert info.name.endswith(("_seconds", "_events")), info.name


def test_series_names_expand_histograms_and_counters() -> None:
    """Queries may use _bucket/_sum/_count of histograms and the _total of counters."""
    names = series_names()
    assert {"sm_apply_seconds_bucket", "sm_apply_seconds_count", "sm_apply_seconds_sum"} <= names
    assert "sm_events_applied_total" in names
    assert "sm_events_applied" not in names


def test_docs_metric_table_matches_code() -> None:
    """docs/operating.md's metric catalogue is exactly the table generated from the registry."""
    readme = PAGE.read_text()
    start_marker, end_marker = "<!-- metrics:start -->", "<!-- metrics:end -->"
    assert start_marker in readme, "docs/operating.md lacks the <!-- metrics:start --> block"
    start = readme.index(start_marker) + len(start_marker)
    end = readme.index(end_marker)
    assert readme[start:end].strip() == catalogue_table(), (
        "docs/operating.md metric table is stale: regenerate it with "
        "python -m stream_migrator.observability.catalogue"
    )
