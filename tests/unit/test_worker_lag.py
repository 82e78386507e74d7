"""The worker's lag figures come from what its consumer already knows (scripted consumer).

Why it matters: an uncached watermark query waits behind the consumer's own
long-poll fetch, so a worker that measures lag that way drains a few hundred
events a second (issue 11). tests/integration/test_worker_lag.py checks the
figures against a real broker.
"""

from __future__ import annotations

import uuid

from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from tests.unit.test_worker_backpressure import _TOPIC, _Consumer, _Msg, _Sink, _worker


def _gauge(name: str, migration: str, partition: int | None = None) -> float | None:
    labels = {"migration": migration}
    if partition is not None:
        labels["partition"] = str(partition)
    return REGISTRY.get_sample_value(name, labels)


def _report(worker: object) -> None:
    worker._lag.due()  # type: ignore[attr-defined]  # due now, whatever the clock
    worker._lag.maybe_report(worker._offsets)  # type: ignore[attr-defined]


def test_lag_report_makes_no_watermark_request_and_asks_committed_once() -> None:
    """Lag = cached high watermark - committed; the coordinator is asked once per partition."""
    migration = f"lag-{uuid.uuid4().hex[:6]}"
    consumer = _Consumer(owned=[0, 1])
    consumer.group_offsets = {0: 3}  # partition 1: never committed, read from low
    consumer.cached = {0: (0, 10), 1: (2, 8)}
    worker = _worker(consumer, _Sink(failures=0), migration)
    _report(worker)
    assert worker.lag == 7 + 6
    assert _gauge("sm_consumer_lag_events", migration) == 13
    assert _gauge("sm_consumer_partition_lag_events", migration, 0) == 7
    assert _gauge("sm_consumer_partition_lag_events", migration, 1) == 6
    worker._process([_Msg(0, 3), _Msg(0, 4), _Msg(0, 5)])  # type: ignore[list-item]
    consumer.cached[1] = (2, 9)  # a fetch response moved the watermark
    _report(worker)
    _report(worker)
    assert worker.lag == 4 + 7
    assert _gauge("sm_consumer_partition_lag_events", migration, 0) == 4
    assert consumer.committed_asked == [[0, 1]]  # once, not on each report
    assert consumer.uncached_watermarks == 0  # no broker request for a measurement


def test_lag_of_a_reassigned_partition_is_asked_again() -> None:
    """A partition revoked and assigned back may have moved meanwhile: its commit is re-read."""
    migration = f"lag-{uuid.uuid4().hex[:6]}"
    consumer = _Consumer(owned=[0, 1])
    consumer.cached = {0: (0, 10), 1: (0, 10)}
    worker = _worker(consumer, _Sink(failures=0), migration)
    _report(worker)
    revoked = [TopicPartition(_TOPIC, 1)]
    worker._on_revoke(consumer, revoked)  # type: ignore[arg-type]
    consumer.owned = [TopicPartition(_TOPIC, 0)]
    _report(worker)
    assert _gauge("sm_consumer_partition_lag_events", migration, 1) is None  # not ours
    consumer.group_offsets[1] = 6  # the other owner committed
    consumer.owned.append(TopicPartition(_TOPIC, 1))
    _report(worker)
    assert consumer.committed_asked == [[0, 1], [1]]
    assert _gauge("sm_consumer_partition_lag_events", migration, 1) == 4
    assert worker.lag == 10 + 4


def test_lag_is_unknown_until_every_owned_partition_was_fetched() -> None:
    """A partition with no cached watermark yet makes the total unknown, never a false 0."""
    migration = f"lag-{uuid.uuid4().hex[:6]}"
    consumer = _Consumer(owned=[0, 1])
    consumer.cached = {0: (0, 0)}
    worker = _worker(consumer, _Sink(failures=0), migration)
    _report(worker)
    assert worker.lag is None
    assert _gauge("sm_consumer_lag_events", migration) is None
    assert _gauge("sm_consumer_partition_lag_events", migration, 0) == 0
    consumer.cached[1] = (0, 5)
    _report(worker)
    assert worker.lag == 5
