"""Prometheus metrics of the reconciler (names distinct from the worker's lag gauges)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DIVERGENCE_RATIO = Gauge(
    "sm_divergence_ratio",
    "Divergent documents over compared documents in the last reconcile (an estimate in "
    "sample mode).",
    ["migration"],
)
DIVERGENT_DOCUMENTS = Gauge(
    "sm_divergent_documents",
    "Divergent documents found by the last reconcile, by kind (missing, orphan, stale, "
    "type, value).",
    ["migration", "kind"],
)
LAG_EVENTS = Gauge(
    "sm_reconcile_consumer_lag_events",
    "Events produced by capture and not yet committed by the transform group, as measured "
    "by the reconciler (the worker's own gauge is sm_consumer_lag_events).",
    ["migration"],
)
LAG_SECONDS = Gauge(
    "sm_reconcile_consumer_lag_seconds",
    "Now minus the cluster time of the oldest unapplied event, as measured by the reconciler.",
    ["migration"],
)
CAPTURE_LAG_SECONDS = Gauge(
    "sm_reconcile_capture_lag_seconds",
    "Source's newest oplog operation minus the newest captured event, in seconds.",
    ["migration"],
)
FIELD_COVERAGE = Gauge(
    "sm_field_coverage_ratio",
    "Share of target documents with the field populated (non-null).",
    ["migration", "field"],
)
READY = Gauge(
    "sm_reconcile_ready",
    "1 when the last reconcile's verdict was READY for cutover, else 0.",
    ["migration"],
)
RUNS = Counter(
    "sm_reconcile_runs_total",
    "Reconcile runs finished, by mode (full, sample) and verdict (ready, not_ready).",
    ["migration", "mode", "verdict"],
)
LAST_RUN_SECONDS = Gauge(
    "sm_reconcile_last_run_duration_seconds", "Duration of the last reconcile run.", ["migration"]
)
