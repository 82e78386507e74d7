"""The quarantine topic: bad events go there with the reason, never dropped, never blocking."""

from __future__ import annotations

from confluent_kafka import Message

from stream_migrator.kafka import AckedProducer


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

    def flush(self) -> None:
        self._producer.barrier()
