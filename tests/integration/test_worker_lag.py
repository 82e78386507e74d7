"""The worker's lag, measured without a broker request, agrees with what Kafka says."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from confluent_kafka import Consumer
from prometheus_client import REGISTRY

from stream_migrator import events
from stream_migrator.demo.data import v1_order
from stream_migrator.kafka import (
    AckedProducer,
    consumer_config,
    ensure_topic,
    partition_positions,
    producer_config,
)
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import load_settings
from stream_migrator.spec import get_spec
from stream_migrator.transform import MongoSink, TransformWorker, lag_gauges
from stream_migrator.transform.quarantine import Quarantine
from stream_migrator.transform.sink import detect_guard_mode
from tests.integration.helpers import client_for

pytestmark = pytest.mark.integration

EVENTS = 3000


def test_worker_lag_matches_the_broker_while_draining(
    settings_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At every report, total and per-partition lag equal Kafka's high watermark - commit."""
    monkeypatch.setattr(lag_gauges, "_EVERY_S", 0.0)  # a report every iteration
    s = load_settings(**settings_kwargs)
    ensure_topic(s.kafka_bootstrap, s.changes_topic, 3)
    producer = AckedProducer(producer_config(s.kafka_bootstrap, "lag-test"))
    rng = random.Random(3)
    for i in range(EVENTS):
        doc = v1_order(rng, i)
        ev = events.ChangeEvent("insert", s.source, doc["_id"], doc, (1 << 32) + i, 0)
        producer.produce(s.changes_topic, ev.key, events.encode(ev))
    producer.barrier()
    client = client_for(s)
    tdb, tcoll = s.split_ns(s.target)
    # Reads the group's commits and the watermarks from Kafka, without joining the group.
    probe = Consumer(consumer_config(s.kafka_bootstrap, s.consumer_group, "lag-probe"))
    seen: list[tuple[int | None, dict[int, float | None], dict[int, int]]] = []
    worker: TransformWorker | None = None

    def observe() -> None:
        # Runs on the worker's loop right after its lag report, so nothing moves
        # while both sides are read: the worker is the only one committing.
        assert worker is not None
        truth = partition_positions(probe, s.changes_topic, range(3))
        gauges = {
            p: REGISTRY.get_sample_value(
                "sm_consumer_partition_lag_events",
                {"migration": s.migration, "partition": str(p)},
            )
            for p in range(3)
        }
        seen.append((worker.lag, gauges, {p: pos.lag for p, pos in truth.items()}))

    stop = StopFlag()
    worker = TransformWorker(
        s.migration,
        s.changes_topic,
        Consumer(consumer_config(s.kafka_bootstrap, s.consumer_group, "lag-worker")),
        get_spec(s.spec),
        MongoSink(client[tdb][tcoll], detect_guard_mode(client)),
        Quarantine(producer, s.quarantine_topic),
        stop,
        batch_size=100,
        maintenance=observe,
        maintenance_every_s=0.0,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while worker.applied < EVENTS or worker.lag != 0:
        assert thread.is_alive(), "the worker stopped"
        assert time.monotonic() < deadline, f"not drained: applied {worker.applied}"
        time.sleep(0.2)
    stop.set("test")
    thread.join(30)
    producer.close()
    probe.close()
    client.close()
    reported = [(lag, gauges, truth) for lag, gauges, truth in seen if lag is not None]
    assert any(lag for lag, _, _ in reported), "no report while events were waiting"
    for lag, gauges, truth in reported:
        assert lag == sum(truth.values())
        assert gauges == {p: float(n) for p, n in truth.items()}
    assert reported[-1][0] == 0
