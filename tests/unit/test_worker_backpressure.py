"""The worker's backpressure and commit decisions, on a scripted consumer (pure logic).

The end-to-end proofs against a real broker are tests/chaos/test_backpressure_rebalance.py
and tests/chaos/test_kafka_kill.py; these pin the decisions those tests cannot force.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from bson import ObjectId
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream_migrator import events
from stream_migrator.errors import RetryableError
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import get_spec
from stream_migrator.transform import TransformWorker

_TOPIC = "sm.m.changes"


class _Msg:
    def __init__(self, partition: int, offset: int) -> None:
        doc = {"_id": ObjectId(), "cust_name": "a", "total": 1}
        ev = events.ChangeEvent("insert", "shop.orders", doc["_id"], doc, (1 << 32) + offset, 0)
        self._value = events.encode(ev)
        self._partition, self._offset = partition, offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return _TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)

    def error(self) -> None:
        return None


class _Consumer:
    """Records what the worker asks of Kafka; consume() hands out ``strays``, one per call.

    A stray is a message fetched although the worker meant every partition paused
    (a partition that arrived unpaused, a fetch already in flight).
    ``group_offsets`` is what the coordinator has committed, ``cached`` the
    watermarks librdkafka would hold from fetch responses, per partition.
    """

    def __init__(self, owned: Sequence[int], strays: Sequence[_Msg] = ()) -> None:
        self.owned = [TopicPartition(_TOPIC, p) for p in owned]
        self.strays = list(strays)
        self.paused: set[int] = set()
        self.seeks: list[tuple[int, int]] = []
        self.commits: list[dict[int, int]] = []
        self.commit_errors: list[KafkaError] = []
        self.group_offsets: dict[int, int] = {}
        self.cached: dict[int, tuple[int, int]] = {}
        self.committed_asked: list[list[int]] = []
        self.uncached_watermarks = 0  # requests to the broker (ListOffsets)

    def assignment(self) -> list[TopicPartition]:
        return list(self.owned)

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in tps}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.owned += tps

    def consume(self, _n: int, _timeout: float) -> list[_Msg]:
        return [self.strays.pop(0)] if self.strays else []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert not asynchronous
        if self.commit_errors:
            raise KafkaException(self.commit_errors.pop(0))
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        self.group_offsets.update({tp.partition: tp.offset for tp in offsets})

    def committed(self, tps: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        self.committed_asked.append(sorted(tp.partition for tp in tps))
        return [
            TopicPartition(_TOPIC, tp.partition, self.group_offsets.get(tp.partition, -1001))
            for tp in tps
        ]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if not cached:
            self.uncached_watermarks += 1
            return self.cached.get(tp.partition, (0, 0))
        return self.cached.get(tp.partition, (-1001, -1001))


class _Sink:
    """Fails ``failures`` times (the target is down), then writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.applied: list[list[TargetWrite]] = []

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        if self.failures:
            self.failures -= 1
            raise RetryableError("target down", retry_after=0.001)
        self.applied.append(list(writes))
        return ApplyResult(written=len(writes))


class _Quarantine:
    def flush(self, timeout: float = 60.0) -> None:
        pass


def _worker(consumer: _Consumer, sink: _Sink, migration: str = "m") -> TransformWorker:
    return TransformWorker(
        migration,
        _TOPIC,
        consumer,  # type: ignore[arg-type]
        get_spec("orders.v1_to_v2"),
        sink,
        _Quarantine(),  # type: ignore[arg-type]
        StopFlag(),
    )


def test_backpressure_rewinds_a_message_fetched_outside_the_batch() -> None:
    """A message consume() returns while backing off is sought back and paused, never written."""
    consumer = _Consumer(owned=[0, 1], strays=[_Msg(partition=1, offset=7)])
    sink = _Sink(failures=3)
    seen_paused: list[set[int]] = []
    seek = consumer.seek

    def seek_and_note(tp: TopicPartition) -> None:
        seen_paused.append(set(consumer.paused))
        seek(tp)

    consumer.seek = seek_and_note  # type: ignore[method-assign]
    _worker(consumer, sink)._process([_Msg(0, 3)])  # type: ignore[list-item]
    assert consumer.seeks == [(1, 7)]  # read again after the outage
    assert seen_paused == [{0, 1}]  # its partition paused before the seek
    assert [len(w) for w in sink.applied] == [1]  # only the batch was written
    assert consumer.commits == [{0: 4}]  # and nothing committed for partition 1
    assert consumer.paused == set()  # all resumed once the target is back


def test_partitions_assigned_during_backpressure_are_paused_on_assign() -> None:
    """Partitions handed over while the target fails are assigned and paused before any fetch."""
    consumer = _Consumer(owned=[0])
    worker = _worker(consumer, _Sink(failures=0))
    worker._backpressure = True
    worker._on_assign(consumer, [TopicPartition(_TOPIC, 2)])  # type: ignore[arg-type]
    assert [tp.partition for tp in consumer.owned] == [0, 2]
    assert consumer.paused == {2}
    worker._backpressure = False
    worker._on_assign(consumer, [TopicPartition(_TOPIC, 3)])  # type: ignore[arg-type]
    assert consumer.paused == {2}  # no backpressure: the library assigns, nothing paused


def test_commit_skips_partitions_revoked_while_the_batch_was_retried() -> None:
    """A retried batch holding a partition we no longer own commits only the ones we own."""
    consumer = _Consumer(owned=[0])
    worker = _worker(consumer, _Sink(failures=0))
    worker._process([_Msg(0, 3), _Msg(1, 9)])  # type: ignore[list-item]
    assert consumer.commits == [{0: 4}]


def test_commit_without_coordinator_is_deferred_then_retried() -> None:
    """_WAIT_COORD keeps the offsets; the next commit carries them (gap-free), nothing raised."""
    consumer = _Consumer(owned=[0, 1])
    consumer.commit_errors = [KafkaError(KafkaError._WAIT_COORD)]
    worker = _worker(consumer, _Sink(failures=0))
    worker._process([_Msg(0, 3)])  # type: ignore[list-item]
    assert consumer.commits == []
    worker._process([_Msg(1, 5)])  # type: ignore[list-item]
    assert consumer.commits == [{0: 4, 1: 6}]


def test_commit_refused_for_a_data_reason_still_raises() -> None:
    """An error that is neither a lost rebalance nor a missing coordinator is not swallowed."""
    consumer = _Consumer(owned=[0])
    consumer.commit_errors = [KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    worker = _worker(consumer, _Sink(failures=0))
    with pytest.raises(KafkaException) as info:
        worker._process([_Msg(0, 3)])  # type: ignore[list-item]
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
