"""Lag: how far the target is behind the source, per partition, in events and seconds.

Every figure here derives from ``kafka.partition_positions`` (through
``kafka.topic_positions``): the reconciler's report, the gates' lag and the fences'
topic sizes read the same positions the transform worker reports.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from stream_migrator import events
from stream_migrator.errors import EnvelopeError
from stream_migrator.kafka import PartitionPosition, Security, consumer_config, topic_positions


@dataclass
class PartitionLag:
    """One partition's lag: its position, and the cluster time of its oldest unapplied event."""

    position: PartitionPosition
    oldest_unapplied_version: int | None = None  # cluster time of the event at `committed`

    @property
    def partition(self) -> int:
        return self.position.partition

    @property
    def produced(self) -> int:
        """High watermark: offsets capture has produced."""
        return self.position.high

    @property
    def committed(self) -> int:
        """The offset the transform group reads next (its commit, else the low watermark)."""
        return self.position.start

    @property
    def events(self) -> int:
        return self.position.lag

    def seconds(self, now: float) -> float:
        if not self.events or self.oldest_unapplied_version is None:
            return 0.0
        return max(0.0, now - (self.oldest_unapplied_version >> 32))


@dataclass
class LagReport:
    """Consumer lag per partition, plus capture lag (source's last operation vs last captured)."""

    known: bool = False
    partitions: list[PartitionLag] = field(default_factory=list)
    measured_at: float = field(default_factory=time.time)
    last_captured_version: int | None = None
    source_latest_version: int | None = None
    error: str | None = None
    topic_missing: bool = False
    #: Capture lag was measured: the source's oplog was read (whether or not it had
    #: an entry of the collection). False when not asked for or when it failed.
    capture_measured: bool = False
    #: Why capture lag is unknown (the oplog read failed), for the verdict.
    capture_error: str | None = None

    @property
    def events(self) -> int:
        return sum(p.events for p in self.partitions)

    @property
    def seconds(self) -> float:
        return max((p.seconds(self.measured_at) for p in self.partitions), default=0.0)

    @property
    def capture_lag_seconds(self) -> float | None:
        """Source's newest operation minus the newest captured event (None if unknown).

        0 when the oplog was read and holds no change of the collection: nothing to capture.
        """
        if not self.capture_measured:
            return None
        if self.source_latest_version is None:
            return 0.0
        if self.last_captured_version is None:
            return max(0.0, self.measured_at - (self.source_latest_version >> 32))
        gap = (self.source_latest_version >> 32) - (self.last_captured_version >> 32)
        return float(max(0, gap))

    def to_json(self) -> dict[str, Any]:
        return {
            "known": self.known,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "capture_lag_seconds": self.capture_lag_seconds,
            "capture_error": self.capture_error,
            "error": self.error,
            "partitions": [
                {
                    "partition": p.partition,
                    "produced": p.produced,
                    "committed": p.committed,
                    "events": p.events,
                    "seconds": round(p.seconds(self.measured_at), 3),
                }
                for p in self.partitions
            ],
        }


class LagProbe:
    """Reads the transform group's committed offsets without joining the group.

    Its consumer carries the transform group's id (``committed()`` answers for the
    consumer's own group) but never subscribes and never commits; it only
    ``assign``s to peek at single messages, which does not disturb the workers.
    """

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        security: Security | None = None,
        *,
        client_id: str | None = None,
    ) -> None:
        client_id = client_id or f"sm-reconcile-lag-{uuid.uuid4().hex[:6]}"
        config = consumer_config(bootstrap, group, client_id, security)
        self._consumer = Consumer(config)
        self._topic = topic

    def close(self) -> None:
        self._consumer.close()

    def group_lag(self, timeout: float = 5.0) -> int | None:
        """Unapplied events in total (None when Kafka cannot tell)."""
        report = self.measure(None, None, timeout=timeout, peek=False)
        return report.events if report.known else None

    def measure(
        self,
        client: MongoClient[dict[str, Any]] | None,
        source_ns: str | None,
        *,
        timeout: float = 5.0,
        peek: bool = True,
    ) -> LagReport:
        """Consumer lag per partition (``peek``: with the age of each oldest unapplied
        event), and capture lag when ``client`` and ``source_ns`` are given.

        Unknown, never 0, when the topic is missing or Kafka gives no positions:
        ``known`` is False and ``error`` says why.
        """
        report = LagReport()
        try:
            positions = topic_positions(self._consumer, self._topic, timeout)
            if positions is None:
                report.error = f"topic {self._topic} not found (has capture started?)"
                report.topic_missing = True
            else:
                report.partitions = [PartitionLag(positions[p]) for p in sorted(positions)]
                # The newest captured event matters only for capture lag.
                if peek:
                    report.last_captured_version = self._peek(report.partitions, client)
                report.known = True
        except KafkaException as exc:
            report.error = f"Kafka did not answer: {exc}"
        if client is not None and source_ns is not None:
            try:
                report.source_latest_version = source_latest_version(client, source_ns)
                report.capture_measured = True
            except CaptureLagUnknown as exc:
                report.capture_error = str(exc)
        report.measured_at = time.time()
        return report

    def _peek(
        self, partitions: list[PartitionLag], client: MongoClient[dict[str, Any]] | None
    ) -> int | None:
        """Fill each lagging partition's oldest unapplied version; the newest captured one.

        The newest captured event is read only when capture lag is measured (``client``).
        """
        newest: int | None = None
        for lag in partitions:
            pos = lag.position
            if lag.events:
                lag.oldest_unapplied_version = self._version_at(pos.partition, pos.start)
            if client is not None and pos.high > pos.low:
                last = self._version_at(pos.partition, pos.high - 1)
                if last is not None:
                    newest = last if newest is None else max(newest, last)
        if partitions:
            self._consumer.unassign()
        return newest

    def _version_at(self, partition: int, offset: int, timeout: float = 5.0) -> int | None:
        self._consumer.assign([TopicPartition(self._topic, partition, offset)])
        msg: Any = self._consumer.poll(timeout)
        if msg is None or msg.error() is not None:
            return None
        try:
            return events.decode(msg.value()).cluster_time
        except EnvelopeError:
            return None


class CaptureLagUnknown(Exception):  # noqa: N818 - read as "capture lag is unknown"
    """The source's oplog could not be read, so capture lag cannot be measured."""


def source_latest_version(client: MongoClient[dict[str, Any]], ns: str) -> int | None:
    """Cluster time of the newest oplog entry of ``ns``; None when the oplog has none.

    Raises CaptureLagUnknown when the oplog cannot be read: through mongos (a sharded
    cluster shows no ``local.oplog.rs``), without read access on ``local``, or on a
    server without an oplog (standalone).
    """
    try:
        entry = client["local"]["oplog.rs"].find_one(
            {"ns": ns}, sort=[("$natural", -1)], projection={"ts": 1}, max_time_ms=5000
        )
    except PyMongoError as exc:
        raise CaptureLagUnknown(
            f"reading local.oplog.rs failed ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if entry is None or "ts" not in entry:
        return None
    return events.version_of(entry["ts"])


def latest_change_versions(
    client: MongoClient[dict[str, Any]], ns: str, ids: list[Any]
) -> dict[Any, int] | None:
    """Newest oplog cluster time per document of ``ids`` (None when the oplog is unreadable).

    One oplog scan per call: used only for the few documents that still differ on
    a recheck, to tell "in flight" (the source changed after the target's version)
    from a real divergence.
    """
    if not ids:
        return {}
    query = {"ns": ns, "$or": [{"o._id": {"$in": ids}}, {"o2._id": {"$in": ids}}]}
    try:
        cursor = client["local"]["oplog.rs"].find(
            query, projection={"ts": 1, "o._id": 1, "o2._id": 1}, max_time_ms=30_000
        )
        out: dict[Any, int] = {}
        for entry in cursor:
            doc_id = (entry.get("o2") or {}).get("_id", (entry.get("o") or {}).get("_id"))
            version = events.version_of(entry["ts"])
            key = events.hashable_id(doc_id)
            if version > out.get(key, -1):
                out[key] = version
        return out
    except PyMongoError:
        return None
