"""Fences: limits read from the pipeline's own measurements; a breach halts the rollout."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException
from prometheus_client.parser import text_string_to_metric_families

from stream_migrator.kafka import topic_positions
from stream_migrator.rollout.gate import VerdictLike
from stream_migrator.rollout.plan import Fences


@dataclass(frozen=True)
class Measurements:
    """What the fences are checked against; None = not measured (see :func:`missing`)."""

    lag_events: int | None = None
    lag_seconds: float | None = None
    error_rate: float | None = None
    divergence_ratio: float | None = None
    p99_apply_seconds: float | None = None


@dataclass(frozen=True)
class Breach:
    fence: str
    value: float
    limit: float

    def __str__(self) -> str:
        return f"{self.fence} {self.value:g} > {self.limit:g}"


_PAIRS = (
    ("max_lag_events", "lag_events"),
    ("max_lag_seconds", "lag_seconds"),
    ("max_error_rate", "error_rate"),
    ("max_divergence_ratio", "divergence_ratio"),
    ("max_p99_apply_seconds", "p99_apply_seconds"),
)


def evaluate(fences: Fences, measured: Measurements) -> list[Breach]:
    """Every fence whose measured value exceeds its limit."""
    out = []
    for limit_name, value_name in _PAIRS:
        limit = getattr(fences, limit_name)
        value = getattr(measured, value_name)
        if limit is not None and value is not None and value > limit:
            out.append(Breach(value_name, float(value), float(limit)))
    return out


def missing(fences: Fences, measured: Measurements) -> list[str]:
    """Every fence with a limit whose measurement is None (``Fences.on_missing`` decides)."""
    return [
        value_name
        for limit_name, value_name in _PAIRS
        if getattr(fences, limit_name) is not None and getattr(measured, value_name) is None
    ]


def measure(
    verdict: VerdictLike,
    *,
    consumer: Consumer,
    changes_topic: str,
    quarantine_topic: str,
    migration: str,
    metrics_urls: tuple[str, ...] = (),
) -> Measurements:
    """Lag and divergence from the gate's verdict, error rate from Kafka, p99 from /metrics."""
    captured = topic_size(consumer, changes_topic)
    quarantined = topic_size(consumer, quarantine_topic)
    return Measurements(
        lag_events=verdict.lag_events,
        lag_seconds=verdict.lag_seconds,
        error_rate=error_rate(captured, quarantined),
        divergence_ratio=verdict.divergence_ratio,
        p99_apply_seconds=p99_from_metrics(metrics_urls, migration) if metrics_urls else None,
    )


def error_rate(captured: int | None, quarantined: int | None) -> float | None:
    """Quarantined per captured event; None (unmeasured: the fence holds) if either is unknown."""
    if captured is None or quarantined is None:
        return None
    return quarantined / captured if captured else 0.0


def topic_size(consumer: Consumer, topic: str, timeout: float = 5.0) -> int | None:
    """Messages ever written to ``topic`` (sum of high watermarks); None if unknown."""
    try:
        positions = topic_positions(consumer, topic, timeout)
    except KafkaException:
        return None
    return None if positions is None else sum(p.high for p in positions.values())


def p99_from_metrics(
    urls: tuple[str, ...], migration: str, metric: str = "sm_batch_seconds"
) -> float | None:
    """The 99th percentile of the workers' batch apply time, merged over their /metrics.

    Cumulative since each worker started (Prometheus histograms are); the answer is
    the upper bound of the bucket holding the 99th percentile.
    """
    buckets: dict[float, float] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - operator URLs
                text = reply.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name != metric:
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("migration") == migration:
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    return _quantile(buckets, 0.99)


def _quantile(buckets: dict[float, Any], q: float) -> float | None:
    if not buckets:
        return None
    total = buckets.get(float("inf"), max(buckets.values()))
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None
