"""The reconciler gate the controller consults before every advance.

The controller depends only on the :class:`Gate` protocol. :func:`compare_gate`
is a simple one built from ``reconcile.full_compare`` (divergence) and
``kafka.group_lag`` (lag); ``stream_migrator.reconcile.gate`` is the default (:data:`DEFAULT_GATE`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition

from stream_migrator.kafka import consumer_config, group_lag
from stream_migrator.mongo import connect
from stream_migrator.reconcile import full_compare
from stream_migrator.reconcile import gate as reconcile_gate
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec


class VerdictLike(Protocol):
    """The shape of ``stream_migrator.reconcile.Verdict``."""

    @property
    def ready(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...

    @property
    def divergence_ratio(self) -> float: ...

    @property
    def lag_events(self) -> int: ...

    @property
    def lag_seconds(self) -> float: ...


class Gate(Protocol):
    """``reconcile.gate``'s call shape: is the target ready for more exposure?"""

    def __call__(self, settings: Settings, *, sample: float | None = None) -> VerdictLike: ...


@dataclass(frozen=True)
class GateVerdict:
    ready: bool
    reasons: list[str] = field(default_factory=list)
    divergence_ratio: float = 0.0
    lag_events: int = 0
    lag_seconds: float = 0.0


def compare_gate(
    settings: Settings, *, sample: float | None = None, settle_s: float = 3.0
) -> GateVerdict:
    """Full compare + consumer-group lag. ``sample`` is accepted and ignored (full compare).

    A compare taken while events are in flight sees them as divergence, so when it
    finds mismatches and the group lags, it waits up to ``settle_s`` for the lag to
    clear and compares once more (a poor man's recheck of in-flight keys).

    Unlike the default gate it does not block on source documents the spec rejects
    (they are in quarantine; the demo seeds some on purpose and still advances):
    use :data:`DEFAULT_GATE` where a quarantined document must hold the rollout.
    """
    del sample
    consumer = Consumer(
        consumer_config(
            settings.kafka_bootstrap, settings.consumer_group, "sm-gate", settings.kafka_client
        )
    )
    client = connect(settings.mongo_uri.get_secret_value(), app="rollout-gate")
    try:
        sdb, scoll = settings.split_ns(settings.source)
        tdb, tcoll = settings.split_ns(settings.target)
        spec = get_spec(settings.spec, settings.hook_policy)
        report = full_compare(client[sdb][scoll], client[tdb][tcoll], spec)
        lag = group_lag(consumer, settings.changes_topic)
        if report.mismatches and lag:
            deadline = time.monotonic() + settle_s
            while lag and time.monotonic() < deadline:
                time.sleep(0.2)
                lag = group_lag(consumer, settings.changes_topic)
            report = full_compare(client[sdb][scoll], client[tdb][tcoll], spec)
            lag = group_lag(consumer, settings.changes_topic)
        age = oldest_pending_age(consumer, settings.changes_topic) if lag else 0.0
    finally:
        client.close()
        consumer.close()
    reasons = []
    if lag is None:
        reasons.append(f"lag of {settings.consumer_group} on {settings.changes_topic} is unknown")
    elif lag:
        reasons.append(f"{lag} events not yet applied ({age:.1f} s behind)")
    if report.mismatches:
        reasons.append(
            f"{report.mismatches} mismatches (missing {report.missing}, extra {report.extra}, "
            f"different {report.different}) of {report.source_count} documents"
        )
    return GateVerdict(
        ready=not reasons,
        reasons=reasons,
        divergence_ratio=report.mismatches / max(1, report.source_count),
        lag_events=lag or 0,
        lag_seconds=age,
    )


def oldest_pending_age(consumer: Consumer, topic: str, timeout: float = 5.0) -> float:
    """Seconds since the oldest not-yet-committed event was produced (0 when none).

    Reads one message at each lagging partition's committed offset with ``assign``:
    it never joins the group and never commits, so it does not disturb the workers.
    """
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None:
            return 0.0
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        oldest: float | None = None
        for tp in consumer.committed(parts, timeout=timeout):
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            position = tp.offset if tp.offset >= 0 else low
            if position >= high:
                continue
            consumer.assign([TopicPartition(topic, tp.partition, position)])
            msg: Any = consumer.poll(timeout)
            if msg is not None and msg.error() is None:
                ts = msg.timestamp()[1] / 1000
                oldest = ts if oldest is None else min(oldest, ts)
        consumer.unassign()
    except KafkaException:
        return 0.0
    return 0.0 if oldest is None else max(0.0, time.time() - oldest)


#: The gate the CLI and ``rollout run`` use: the reconciler's (bucketed hashes,
#: rechecks of in-flight documents, lag). ``compare_gate`` stays as a simpler fallback.
DEFAULT_GATE: Gate = reconcile_gate
