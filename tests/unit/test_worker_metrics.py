"""The worker's batched metric updates export exactly what per-event updates would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from stream_migrator.observability.metrics import observe_all

_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_all_matches_one_observe_per_value() -> None:
    """Bucket counts (bounds inclusive, +Inf included), count and sum equal per-value observe."""
    values = [0.0, 0.01, 0.011, 0.25, 0.3, 4.9, 5.0, 7.5, 1e9, 0.25]
    one, batched = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("lat_seconds", "d", ["m"], buckets=_BUCKETS, registry=one).labels("x")
    by_batch = Histogram("lat_seconds", "d", ["m"], buckets=_BUCKETS, registry=batched).labels("x")
    for v in values:
        by_one.observe(v)
    observe_all(by_batch, values)
    observe_all(by_batch, [])
    assert _samples(batched) == _samples(one)
    assert _samples(one)[("lat_seconds_count", (("m", "x"),))] == len(values)
