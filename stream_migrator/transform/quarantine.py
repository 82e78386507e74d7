"""The quarantine topic: bad events go there with the reason, never dropped, never blocking."""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import bson
from bson import json_util
from confluent_kafka import Consumer, Message, TopicPartition

from stream_migrator.errors import RetryableError
from stream_migrator.kafka import AckedProducer, Security, client_config


class Quarantine:
    """Re-publishes the original message unchanged, with why it failed in headers."""

    def __init__(self, producer: AckedProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.count = 0

    def send(self, msg: Message, stage: str, reason: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("sm.stage", stage.encode()),
            ("sm.reason", reason.encode()[:4096]),
            ("sm.source.topic", (msg.topic() or "").encode()),
            ("sm.source.partition", str(msg.partition()).encode()),
            ("sm.source.offset", str(msg.offset()).encode()),
        ]
        self._producer.produce(self.topic, msg.key() or b"", msg.value() or b"", headers=headers)
        self.count += 1

    def flush(self, timeout: float = 60.0) -> None:
        """Return once Kafka acknowledged every event sent; RetryableError after ``timeout``."""
        self._producer.barrier(timeout)


@dataclass(frozen=True)
class QuarantinedEvent:
    """One message of the quarantine topic, as an operator sees it."""

    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def stage(self) -> str:
        return self.headers.get("sm.stage", "?")

    @property
    def reason(self) -> str:
        return self.headers.get("sm.reason", "")

    def doc_id(self) -> Any:
        """The document's _id from the Kafka key, or None if the key is not ours."""
        with contextlib.suppress(Exception):  # not our BSON key: try the connector's JSON
            return bson.decode(self.key).get("_id")
        try:
            key = json_util.loads(self.key)
        except Exception:  # noqa: BLE001 - a foreign key is shown as absent, not fatal
            return None
        return key.get("_id") if isinstance(key, dict) else None


def read_quarantine(
    bootstrap: str, topic: str, timeout: float = 30.0, *, security: Security | None = None
) -> list[QuarantinedEvent]:
    """Read the whole quarantine topic from its beginning to its current end."""
    consumer = Consumer(
        {
            **client_config(bootstrap, security),
            "group.id": f"sm-quarantine-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends: dict[int, int] = {}
        assignment = []
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        if not assignment:
            return []
        consumer.assign(assignment)
        out: list[QuarantinedEvent] = []
        deadline = time.monotonic() + timeout
        done: set[int] = set()
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise RetryableError(f"reading {topic} timed out after {timeout:.0f}s")
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            p, o = msg.partition() or 0, msg.offset() or 0
            out.append(
                QuarantinedEvent(
                    partition=p,
                    offset=o,
                    key=msg.key() or b"",
                    value=msg.value() or b"",
                    headers=_headers(msg),
                )
            )
            if o + 1 >= ends[p]:
                done.add(p)
        return sorted(out, key=lambda e: (e.partition, e.offset))
    finally:
        consumer.close()


def _headers(msg: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in list(msg.headers() or []):
        raw = value or b""
        out[str(key)] = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return out
