"""kafka.topic_positions: a partial answer from Kafka is an unknown lag (scripted consumer)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaException, TopicPartition

from stream_migrator.kafka import PartitionPosition, topic_positions
from stream_migrator.reconcile.lag import PartitionLag

_TOPIC = "sm.m.changes"


class _Consumer:
    """Metadata, commits and watermarks as scripted; None = no watermarks for it."""

    def __init__(self, watermarks: dict[int, tuple[int, int] | None]) -> None:
        self.watermarks = watermarks

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(partitions=dict.fromkeys(self.watermarks), error=None)
        return SimpleNamespace(topics={_TOPIC: meta})

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(_TOPIC, tp.partition, 1) for tp in parts]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int] | None:
        return self.watermarks[tp.partition]


def test_topic_positions_cover_every_partition() -> None:
    """Every partition of the topic is answered, from partition_positions."""
    positions = topic_positions(_Consumer({0: (0, 4), 1: (0, 1)}), _TOPIC)  # type: ignore[arg-type]
    assert positions == {0: PartitionPosition(0, 0, 4, 1), 1: PartitionPosition(1, 0, 1, 1)}


def test_topic_positions_missing_a_partition_raise_instead_of_a_smaller_lag() -> None:
    """A partition without watermarks makes the lag unknown, never a sum over the others."""
    with pytest.raises(KafkaException, match=r"no watermarks for sm.m.changes partitions \[1\]"):
        topic_positions(_Consumer({0: (0, 4), 1: None}), _TOPIC)  # type: ignore[arg-type]


def test_topic_positions_of_a_missing_topic_are_none() -> None:
    """No such topic (no capture yet): None, which LagProbe reports as topic_missing."""
    consumer = _Consumer({})
    consumer.list_topics = lambda topic, timeout: SimpleNamespace(topics={})  # type: ignore[method-assign]
    assert topic_positions(consumer, _TOPIC) is None  # type: ignore[arg-type]


def test_partition_lag_figures_are_the_position_s() -> None:
    """produced/committed/events read the position: high, start (low if never committed), lag."""
    lag = PartitionLag(PartitionPosition(3, 2, 9, None))
    assert (lag.partition, lag.produced, lag.committed, lag.events) == (3, 9, 2, 7)
    assert PartitionLag(PartitionPosition(3, 2, 9, 9)).events == 0
