"""A DocumentSink that produces to the MongoDB sink connector's topic instead of MongoDB.

What this path keeps and what it gives up (the README says the same):

- kept: nothing is lost. ``apply`` returns only after Kafka acknowledged every
  record (idempotent producer, ``acks=all``), so the worker commits its input
  offsets only after the output is durable; the connector commits its own
  offsets only after MongoDB acknowledged the write.
- kept: per-document order. Records are keyed by ``{"_id": ...}``, so all
  versions of one document sit in one partition, in the order the worker saw
  them, and the connector applies a partition in order.
- kept: types. Canonical Extended JSON keeps ObjectId, Decimal128, Int64, dates.
- lost: the version guard. The connector's write models (ReplaceOneDefault,
  ReplaceOneBusinessKey, UpdateOneTimestamps, ...) cannot express "only if the
  stored ``_sm.v`` is older", so a re-delivered older event (worker crash before
  its commit, rebalance, a snapshot document followed by the replay of older
  changes) overwrites a newer target state until the newer events behind it in
  the same partition are applied again. The target converges to the newest
  state, but may show an older one meanwhile, and the delete tombstones that
  stop a late replayed insert from resurrecting a document do not exist here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream_migrator.errors import FatalError, RetryableError
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.transform.formats import sink_key, sink_value
from stream_migrator.transform.sink import coalesce

_OnDelivery = Callable[[KafkaError | None, Message], None]


def default_sink_topic(migration: str) -> str:
    """The sink connector's input topic when ``SM_SINK_TOPIC`` is empty."""
    return f"sm.{migration}.sink"


class KafkaTopicSink:
    """Produces each write as a sink-connector record; a batch returns once all are acked."""

    def __init__(self, producer: Producer, topic: str, *, flush_timeout_s: float = 30.0) -> None:
        self._producer = producer
        self.topic = topic
        self._flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        # Newest write per _id only: fewer records, and the same batch semantics as
        # MongoSink (a batch's older versions of a document are "coalesced").
        batch, coalesced = coalesce(writes)
        mine = [w for w in batch if not w.echo]  # as in MongoSink: echoes are not written
        result = ApplyResult(coalesced=coalesced, echoes=len(batch) - len(mine))
        batch = mine
        if not batch:
            return result
        errors: list[tuple[TargetWrite, KafkaError]] = []

        def delivered(write: TargetWrite) -> _OnDelivery:
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    with self._lock:
                        errors.append((write, err))

            return on_delivery

        for write in batch:
            try:
                self._produce(write, delivered(write))
            except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                errors.append((write, exc.args[0]))
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise RetryableError(
                f"{remaining} sink records not acknowledged by Kafka within "
                f"{self._flush_timeout_s:.0f}s (topic {self.topic}); is the broker reachable?",
                retry_after=5.0,
            )
        retriable = [err for _, err in errors if err.retriable()]
        if retriable:
            # The whole batch is produced again on retry: duplicates on the sink topic
            # carry the same version and the same content, so applying them twice is
            # harmless.
            raise RetryableError(
                f"Kafka refused {len(retriable)} sink records transiently "
                f"(first: {retriable[0]}); retrying the batch",
                retry_after=1.0,
            )
        fatal = [(w, err) for w, err in errors if err.code() != KafkaError.MSG_SIZE_TOO_LARGE]
        if fatal:
            raise FatalError(
                f"Kafka refused {len(fatal)} records on sink topic {self.topic} "
                f"(first: {fatal[0][1]}); no offset was committed, so a restart re-sends them"
            )
        for write, err in errors:  # too large for the topic: a data problem -> quarantine
            result.failed.append((write, f"sink record refused by Kafka: {err}"))
        result.written = len(batch) - len(errors)
        return result

    def _produce(self, write: TargetWrite, on_delivery: _OnDelivery) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=sink_key(write.doc_id),
                    value=sink_value(write),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                # Local queue full: serve delivery callbacks until there is room.
                self._producer.poll(0.1)
        self._producer.poll(0)
