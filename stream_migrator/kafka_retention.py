"""How long Kafka topics keep their events, and the tombstone retention that must outlive it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from stream_migrator.errors import ConfigError, InfraError
from stream_migrator.kafka import Security, client_config


@dataclass(frozen=True)
class TopicRetention:
    """How long a topic keeps its events, from its configuration."""

    topic: str
    retention_ms: int  # -1 = forever
    segment_ms: int
    cleanup_policy: str = "delete"

    @property
    def longest_ms(self) -> int | None:
        """Longest an event may stay readable in the topic; None = forever.

        Kafka deletes whole segments, a segment once its newest event is older than
        retention.ms, and a segment spans at most segment.ms: an event can outlive
        retention.ms by up to segment.ms. A topic without the delete policy (compact
        only) or with retention.ms=-1 never deletes by age.
        """
        policies = {p.strip() for p in self.cleanup_policy.split(",")}
        if self.retention_ms < 0 or "delete" not in policies:
            return None
        return self.retention_ms + max(0, self.segment_ms)


def topic_retention(
    bootstrap: str, topic: str, timeout: float = 30.0, *, security: Security | None = None
) -> TopicRetention:
    """retention.ms, segment.ms and cleanup.policy of ``topic`` (describe_configs).

    A topic that is not known yet is waited for (up to ``timeout``): a topic just
    created - by this process or a capture starting beside it - is committed by the
    controller before every broker's metadata has it, and describe_configs in that
    window answers UNKNOWN_TOPIC_OR_PART.
    """
    admin = AdminClient(client_config(bootstrap, security))
    resource = ConfigResource(ResourceType.TOPIC, topic)
    deadline = time.monotonic() + timeout
    while True:
        try:
            future = admin.describe_configs([resource], request_timeout=timeout)[resource]
            config = future.result(timeout=timeout)
            break
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            unknown = isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if unknown and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise InfraError(
                f"cannot read the configuration of Kafka topic {topic!r} on {bootstrap}: "
                f"{err}; is the broker reachable?"
            ) from exc

    def value(name: str, default: str) -> str:
        entry = config.get(name)
        return default if entry is None or entry.value is None else str(entry.value)

    return TopicRetention(
        topic,
        retention_ms=int(value("retention.ms", "604800000")),
        segment_ms=int(value("segment.ms", "604800000")),
        cleanup_policy=value("cleanup.policy", "delete"),
    )


def check_tombstone_retention(retention_s: float, topics: Sequence[TopicRetention]) -> None:
    """Refuse (ConfigError) a tombstone retention shorter than any topic keeps its events.

    Why: a tombstone is what stops an older insert or update, replayed from a topic
    (a rewound consumer group, ``quarantine replay``), from resurrecting a deleted
    document. Purged while such an event is still readable, it stops nothing.
    ``retention_s`` 0 means tombstones are kept forever (no purge): always enough.
    """
    if retention_s == 0:
        return
    for t in topics:
        longest = t.longest_ms
        if longest is None:
            raise ConfigError(
                f"Kafka topic {t.topic!r} keeps its events forever (retention.ms="
                f"{t.retention_ms}, cleanup.policy={t.cleanup_policy}), but "
                f"SM_TOMBSTONE_RETENTION_S={retention_s:g} purges delete tombstones after "
                f"{_days(retention_s * 1000)}: an old insert replayed from the topic could "
                "resurrect a deleted document. Set SM_TOMBSTONE_RETENTION_S=0 (keep "
                "tombstones forever) or give the topic a finite retention.ms."
            )
        if retention_s * 1000 <= longest:
            raise ConfigError(
                f"SM_TOMBSTONE_RETENTION_S={retention_s:g} ({_days(retention_s * 1000)}) is "
                f"not longer than Kafka topic {t.topic!r} keeps its events: retention.ms="
                f"{t.retention_ms} + segment.ms={t.segment_ms} = {_days(longest)}. An old "
                "insert replayed from the topic could resurrect a deleted document. Set "
                f"SM_TOMBSTONE_RETENTION_S above {longest // 1000} (or 0 = forever), or "
                "lower the topic's retention.ms."
            )


def _days(ms: float) -> str:
    return f"{ms / 86_400_000:.4g} days"
