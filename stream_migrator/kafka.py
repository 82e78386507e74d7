"""Kafka helpers: client configs, topic creation, the acknowledged producer, group positions.

Topic retention and the tombstone check against it: :mod:`stream_migrator.kafka_retention`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream_migrator.errors import FatalError, InfraError, RetryableError
from stream_migrator.kafka_security import check_kafka_access

#: librdkafka security properties (``Settings.kafka_client``): every client gets them.
Security = Mapping[str, str]
_ACCESS_CHECK_S = 5.0
_POLL_EVERY = 500  # AckedProducer: delivery callbacks served once per this many messages


def client_config(bootstrap: str, security: Security | None = None) -> dict[str, Any]:
    """The connection part of every Kafka client's configuration: bootstrap + security.

    The first time a process builds a client for a broker (per security), it connects
    once: a wrong password, an untrusted CA or a plaintext client at a TLS listener
    raise a ConfigError naming the setting here, before the process touches data. A
    broker that does not answer is left to the caller (it may be restarting).
    """
    props = dict(security or {})
    _check_access_once(bootstrap, tuple(sorted(props.items())))
    return {"bootstrap.servers": bootstrap, **props}


_access_checked: set[tuple[str, tuple[tuple[str, str], ...]]] = set()


def _check_access_once(bootstrap: str, security: tuple[tuple[str, str], ...]) -> None:
    if (bootstrap, security) in _access_checked:
        return
    try:
        check_kafka_access(bootstrap, dict(security), timeout=_ACCESS_CHECK_S)
    except InfraError:
        return  # unreachable: the caller's retry waits for it; the next client checks again
    _access_checked.add((bootstrap, security))


def producer_config(
    bootstrap: str, client_id: str, security: Security | None = None
) -> dict[str, Any]:
    """Idempotent, fully acknowledged producer: a delivered event is on every in-sync replica."""
    return {
        **client_config(bootstrap, security),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 10,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "message.max.bytes": 16 * 1024 * 1024,
    }


def consumer_config(
    bootstrap: str, group: str, client_id: str, security: Security | None = None
) -> dict[str, Any]:
    """Manual commits only: offsets are committed after the target write is acknowledged."""
    return {
        **client_config(bootstrap, security),
        "group.id": group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # What bounds the prefetch: librdkafka stops fetching while its queue holds more
        # than queued.max.messages.kbytes, and a fetch response adds up to
        # fetch.max.bytes; the worker holds two batches (the one being written, the one
        # being prepared) beyond that. One worker draining a 209 MB backlog peaked at
        # 148 MiB RSS with these values, 165 MiB with 32 MiB / 16 MiB
        # (benchmarks/worker_memory.py --events 150000).
        "fetch.max.bytes": 4 * 1024 * 1024,
        "queued.max.messages.kbytes": 8 * 1024,
        # Refetch 100 ms (not 1 s) after the queue fell below that bound, so a fast
        # drain never finds it empty.
        "fetch.queue.backoff.ms": 100,
        # The broker answers a fetch as soon as one byte is there (latency), and holds an
        # idle one at most 100 ms: a request queued behind it on the same connection
        # waits no longer than that (the default 500 ms was paid by every uncached
        # watermark query).
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
        "max.poll.interval.ms": 300_000,
        # A killed worker's partitions move after 10 s instead of Kafka's default 45 s;
        # its uncommitted batch is replayed by the new owner (stale skips).
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
    }


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    timeout: float = 30.0,
    *,
    security: Security | None = None,
) -> None:
    """Create ``topic`` if absent; an existing topic is left as it is."""
    admin = AdminClient(client_config(bootstrap, security))
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=-1)],
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise InfraError(f"cannot create Kafka topic {name!r} on {bootstrap}: {err}") from exc


class AckedProducer:
    """Produces and counts acknowledgements; ``barrier()`` returns only when all are acked.

    Capture checkpoints a resume token only after ``barrier()``: that is what makes
    "token saved" imply "every event before it is in Kafka".
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._unpolled = 0
        self.acked = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is not None:
                self._errors.append(str(err))
            else:
                self.acked += 1

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                # Local queue full: serve delivery callbacks until there is room.
                self._producer.poll(0.1)
        # Serve delivery callbacks now and then, not per message (that was about a
        # tenth of capture's CPU): until served, a report is a small queued struct,
        # and barrier() serves them all before a checkpoint.
        self._unpolled += 1
        if self._unpolled >= _POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def barrier(self, timeout: float = 60.0) -> None:
        """Wait until every produced message is acknowledged; raise if any failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise RetryableError(
                f"{remaining} events not acknowledged by Kafka within {timeout:.0f}s; "
                "is the broker reachable?",
                retry_after=5.0,
            )
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise FatalError(
                f"Kafka refused {len(errors)} events (first: {errors[0]}); "
                "no checkpoint was written, so a restart re-sends them"
            )

    def close(self) -> None:
        self._producer.flush(30)


def group_members(
    bootstrap: str, group: str, timeout: float = 10.0, *, security: Security | None = None
) -> int | None:
    """How many consumers are in ``group`` right now (None if Kafka did not answer)."""
    admin = AdminClient(client_config(bootstrap, security))
    try:
        future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
        return len(future.result(timeout=timeout).members)
    except KafkaException:
        return None


def group_lag(consumer: Consumer, topic: str, timeout: float = 5.0) -> int | None:
    """Events in ``topic`` not yet committed by ``consumer``'s group (None if unknown).

    The consumer need not be subscribed: it only reads committed offsets and
    watermarks, so capture can watch the transform group without joining it.
    """
    try:
        positions = topic_positions(consumer, topic, timeout)
    except KafkaException:
        return None
    return None if positions is None else sum(p.lag for p in positions.values())


def topic_positions(
    consumer: Consumer, topic: str, timeout: float = 5.0
) -> dict[int, PartitionPosition] | None:
    """``partition_positions`` of every partition of ``topic``; None when the topic does not exist.

    Raises KafkaException when Kafka does not answer, answers a committed offset
    with an error, or gives no watermarks for a partition: a lag summed over part of
    the topic would look smaller than it is, so it is unknown instead.
    """
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        return None
    wanted = sorted(meta.partitions)
    positions = partition_positions(consumer, topic, wanted, timeout=timeout)
    absent = [p for p in wanted if p not in positions]
    if absent:
        raise KafkaException(
            KafkaError(KafkaError._TIMED_OUT, f"no watermarks for {topic} partitions {absent}")
        )
    return positions


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where a consumer group stands on one partition, in Kafka offsets."""

    partition: int
    low: int  # oldest offset still in the log
    high: int  # high watermark: the offset the next produced event gets
    committed: int | None  # the group's committed offset (next to read); None = never committed

    @property
    def start(self) -> int:
        """The offset the group reads next: its commit, else (auto.offset.reset earliest) low."""
        return self.low if self.committed is None else self.committed

    @property
    def lag(self) -> int:
        """Events produced and not yet committed by the group."""
        return max(0, self.high - self.start)


def partition_positions(
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    *,
    committed: dict[int, int | None] | None = None,
    cached: bool = False,
    timeout: float = 5.0,
) -> dict[int, PartitionPosition]:
    """Low and high watermarks and ``consumer``'s group's committed offset, per partition.

    The one place lag is computed from. ``committed`` holds offsets the caller
    already knows (a worker knows what it committed itself); the other partitions'
    are asked of the group coordinator in one ``committed()`` call and added to
    it, so a caller that keeps it asks once per partition.

    ``cached=True`` reads the watermarks librdkafka keeps from the fetch responses
    of the partitions this consumer is fetching, with no request to Kafka. Why:
    an uncached ``get_watermark_offsets`` is a ListOffsets request on the broker
    connection the consumer's own long-poll fetch occupies, so it waits up to
    ``fetch.wait.max.ms`` for it; a consume loop that measures that way spends its
    time waiting on itself. A partition with nothing cached yet (no fetch response
    since it was assigned, e.g. assigned paused) is left out of the answer.

    Raises KafkaException when Kafka does not answer in ``timeout`` seconds, or
    answers a partition's committed offset with an error: unknown, never zero.
    """
    known = {} if committed is None else committed
    wanted = list(partitions)
    ask = [TopicPartition(topic, p) for p in wanted if p not in known]
    if ask:
        for tp in consumer.committed(ask, timeout=timeout):
            if tp.error is not None:
                raise KafkaException(tp.error)
            known[tp.partition] = tp.offset if tp.offset >= 0 else None
    positions: dict[int, PartitionPosition] = {}
    for p in wanted:
        tp = TopicPartition(topic, p)
        if cached:
            offsets = consumer.get_watermark_offsets(tp, cached=True)
        else:
            offsets = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
        if offsets is None or offsets[0] < 0 or offsets[1] < 0:
            continue  # not cached yet
        positions[p] = PartitionPosition(p, offsets[0], offsets[1], known[p])
    return positions
