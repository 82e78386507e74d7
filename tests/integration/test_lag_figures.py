"""Every lag figure (reconciler, both gates, fences) is kafka.partition_positions' figure.

One transform group with a known position on each partition of a real topic: one
partition behind, one caught up, one never committed (read from its low
watermark). Each consumer of lag must report what partition_positions reports.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream_migrator import events
from stream_migrator.kafka import (
    consumer_config,
    ensure_topic,
    group_lag,
    partition_positions,
    producer_config,
)
from stream_migrator.reconcile import ReconcileSettings, load_reconcile_settings
from stream_migrator.reconcile import gate as reconcile_gate
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.rollout.fences import measure, topic_size
from stream_migrator.rollout.gate import compare_gate

pytestmark = pytest.mark.integration

#: Events per partition, and the group's commit on it (None: never committed).
PRODUCED = {0: 5, 1: 4, 2: 6}
COMMITTED: dict[int, int | None] = {0: 2, 1: 4, 2: None}
#: Source cluster time (seconds) of partition 0's events; partition 2's are newer.
OLDEST_S = 1000
QUARANTINED = 3


def _settings(settings_kwargs: dict[str, Any]) -> ReconcileSettings:
    return load_reconcile_settings(
        None, **settings_kwargs, reconcile_recheck_timeout_s=2, reconcile_settle_s=0.1
    )


def _seed(s: ReconcileSettings) -> None:
    """Produce to each partition explicitly, then commit the group's offsets."""
    ensure_topic(s.kafka_bootstrap, s.changes_topic, len(PRODUCED))
    ensure_topic(s.kafka_bootstrap, s.quarantine_topic, 1)
    producer = Producer(producer_config(s.kafka_bootstrap, "lag-figures"))
    for partition, count in PRODUCED.items():
        seconds = OLDEST_S if partition == 0 else OLDEST_S + 500
        for i in range(count):
            doc = {"_id": f"p{partition}-{i}", "n": i}
            ev = events.ChangeEvent("insert", s.source, doc["_id"], doc, (seconds << 32) + i, 0)
            producer.produce(s.changes_topic, events.encode(ev), ev.key, partition=partition)
    for i in range(QUARANTINED):
        producer.produce(s.quarantine_topic, b"bad", f"q{i}".encode(), partition=0)
    assert producer.flush(30) == 0, "Kafka did not acknowledge the seeded events"
    committer = Consumer(consumer_config(s.kafka_bootstrap, s.consumer_group, "lag-committer"))
    try:
        offsets = [
            TopicPartition(s.changes_topic, p, offset)
            for p, offset in COMMITTED.items()
            if offset is not None
        ]
        committer.commit(offsets=offsets, asynchronous=False)
    finally:
        committer.close()


def test_every_lag_figure_is_partition_positions(settings_kwargs: dict[str, Any]) -> None:
    """LagProbe, group_lag, compare_gate, the reconcile gate and the fences agree with Kafka."""
    s = _settings(settings_kwargs)
    _seed(s)
    consumer = Consumer(consumer_config(s.kafka_bootstrap, s.consumer_group, "lag-figures"))
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    try:
        truth = partition_positions(consumer, s.changes_topic, PRODUCED)
        # The seeded positions, as Kafka states them: 3 behind, caught up, 6 from low.
        assert {p: (pos.high, pos.committed, pos.lag) for p, pos in truth.items()} == {
            0: (5, 2, 3),
            1: (4, 4, 0),
            2: (6, None, 6),
        }
        total = sum(pos.lag for pos in truth.values())

        before = time.time()
        report = probe.measure(None, None)
        after = time.time()
        assert report.known, report.error
        assert [(p.partition, p.produced, p.committed, p.events) for p in report.partitions] == [
            (pos.partition, pos.high, pos.start, pos.lag) for pos in truth.values()
        ]
        assert report.events == total == probe.group_lag() == group_lag(consumer, s.changes_topic)
        # The oldest unapplied event is partition 0's at its commit, stamped OLDEST_S.
        assert before - OLDEST_S <= report.seconds <= after - OLDEST_S + 1

        before = time.time()
        simple = compare_gate(s, settle_s=0)
        after = time.time()
        assert not simple.ready
        assert simple.lag_events == total
        assert before - OLDEST_S <= simple.lag_seconds <= after - OLDEST_S + 1
        assert f"{total} events not yet applied" in " | ".join(simple.reasons)

        default = reconcile_gate(s)
        assert default.lag_events == total
        assert default.lag_seconds >= before - OLDEST_S

        fenced = measure(
            simple,
            consumer=consumer,
            changes_topic=s.changes_topic,
            quarantine_topic=s.quarantine_topic,
            migration=s.migration,
        )
        assert fenced.lag_events == total
        assert topic_size(consumer, s.changes_topic) == sum(pos.high for pos in truth.values())
        assert fenced.error_rate == QUARANTINED / sum(PRODUCED.values())
    finally:
        probe.close()
        consumer.close()


def test_lag_of_a_missing_topic_is_unknown_everywhere(settings_kwargs: dict[str, Any]) -> None:
    """No change topic: every figure says unknown (None, a reason), none says 0."""
    s = _settings(settings_kwargs)
    consumer = Consumer(consumer_config(s.kafka_bootstrap, s.consumer_group, "lag-missing"))
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    try:
        report = probe.measure(None, None)
        assert not report.known
        assert report.topic_missing
        assert report.error == f"topic {s.changes_topic} not found (has capture started?)"
        assert probe.group_lag() is None
        assert group_lag(consumer, s.changes_topic) is None
        assert topic_size(consumer, s.changes_topic) is None
        verdict = compare_gate(s, settle_s=0)
        assert not verdict.ready
        assert (
            f"lag of {s.consumer_group} on {s.changes_topic} is unknown "
            f"(topic {s.changes_topic} not found (has capture started?))"
        ) in verdict.reasons
    finally:
        probe.close()
        consumer.close()


def test_lag_is_unknown_when_kafka_does_not_answer() -> None:
    """A broker that does not answer gives an unknown lag naming it, not 0."""
    probe = LagProbe("127.0.0.1:9", f"g-{uuid.uuid4().hex[:6]}", "sm.nowhere.changes")
    try:
        report = probe.measure(None, None, timeout=1.0)
    finally:
        probe.close()
    assert not report.known
    assert not report.topic_missing
    assert report.error is not None
    assert report.error.startswith("Kafka did not answer")
