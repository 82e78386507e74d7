"""Prometheus metrics of every stream-migrator process, labelled by migration."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

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
    "Events whose target write was acknowledged or deliberately not made (outcome: written, "
    "stale, coalesced, echo = a forward write the reverse stream does not carry back).",
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
PARTITION_LAG = Gauge(
    "sm_consumer_partition_lag_events",
    "High watermark minus committed position of one assigned partition of the change topic.",
    ["migration", "partition"],
)
PARTITION_LAG_SECONDS = Gauge(
    "sm_consumer_lag_seconds",
    "How far behind the newest event one assigned partition is: now minus the Kafka "
    "timestamp of the last committed event while events are waiting, 0 when caught up.",
    ["migration", "partition"],
)
BACKPRESSURE_PAUSES = Counter(
    "sm_backpressure_pauses_total",
    "Times a worker paused its partitions because the target failed transiently.",
    ["migration"],
)
APPLY_SECONDS = Histogram(
    "sm_apply_seconds",
    "Duration of one successful target bulk write (the batch's apply latency).",
    ["migration"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAST_PROGRESS = Gauge(
    "sm_last_progress_timestamp_seconds",
    "Unix time of the main loop's last heartbeat (component: capture, transform, ...); "
    "time() minus this is how long a process has been stuck.",
    ["migration", "component"],
)
READY = Gauge(
    "sm_ready",
    "1 while the process is connected and working (what /readyz answers), else 0.",
    ["migration", "component"],
)


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one update per bucket.

    Why: ``observe`` takes a lock and walks the buckets in Python for every value;
    per event that was a few microseconds of the worker's budget. This updates the
    same internals ``observe`` does (prometheus_client's ``_upper_bounds``,
    ``_buckets``, ``_sum``), once per bucket per batch, and falls back to
    ``observe`` for a histogram without them.
    """
    if not values:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound >= value
    total.inc(sum(values))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
