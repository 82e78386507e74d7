"""Prometheus metrics of every stream-migrator process, labelled by migration."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CAPTURED = Counter(
    "sm_events_captured_total",
    "Change events produced to Kafka and acknowledged by the broker.",
    ["migration", "op"],
)
CHECKPOINTS = Counter("sm_checkpoints_total", "Resume-token checkpoints persisted.", ["migration"])
CAPTURE_LAG = Gauge(
    "sm_capture_lag_seconds",
    "Wall clock minus the cluster time of the last captured change.",
    ["migration"],
)
EVENTS_APPLIED = Counter(
    "sm_events_applied_total",
    "Events whose target write was acknowledged (outcome: written, stale, coalesced).",
    ["migration", "outcome"],
)
EVENTS_QUARANTINED = Counter(
    "sm_events_quarantined_total",
    "Events sent to the quarantine topic.",
    ["migration", "reason"],
)
BATCH_SECONDS = Histogram(
    "sm_batch_seconds",
    "Time from batch consumed to offsets committed.",
    ["migration"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_EVENTS = Histogram(
    "sm_batch_events",
    "Events per transform batch.",
    ["migration"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
CONSUMER_LAG = Gauge(
    "sm_consumer_lag_events",
    "High watermark minus committed position, summed over assigned partitions.",
    ["migration"],
)
WRITE_RETRIES = Counter(
    "sm_write_retries_total", "Target writes retried after a transient error.", ["migration"]
)
END_TO_END_SECONDS = Histogram(
    "sm_end_to_end_seconds",
    "Capture to target-acknowledged latency per event.",
    ["migration"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
COMMITS_LOST = Counter(
    "sm_commits_lost_to_rebalance_total",
    "Offset commits refused because the group rebalanced; the batch is replayed (stale skips).",
    ["migration"],
)
