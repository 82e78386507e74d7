"""The worker's offset commits: only acknowledged writes, only owned partitions, never lost.

The last step of the commit order (target writes acknowledged -> quarantine
flushed -> offsets committed synchronously): the worker hands a batch here only
after its effect is durable.
"""

from __future__ import annotations

import contextlib
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream_migrator.observability import HealthState, get_logger
from stream_migrator.observability import metrics as m

log = get_logger("transform")

_LOST_TO_REBALANCE = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
}
#: A commit that failed because no group coordinator answered (a broker restart,
#: a network cut): the writes are durable, only their offsets wait; retried.
_COMMIT_LATER = {
    KafkaError._WAIT_COORD,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}
_RETRY_S = 1.0


class OffsetCommitter:
    """Commits the next offsets of acknowledged batches, and remembers what it committed."""

    def __init__(
        self, consumer: Consumer, topic: str, migration: str, health: HealthState
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._migration = migration
        self._health = health
        # The group's committed offset per owned partition of the topic (None = never
        # committed): asked of Kafka once when a partition is assigned, then kept up
        # to date by our own commits, so measuring lag needs no request.
        self.committed: dict[int, int | None] = {}
        # Kafka timestamp (ms) of the newest committed event per partition: lag in seconds.
        self.committed_ts: dict[int, int] = {}
        # Next offsets whose writes are acknowledged but whose commit failed for want
        # of a coordinator; retried until Kafka answers (a later commit covers them).
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._last_try = 0.0

    def retry_due(self) -> bool:
        """Offsets wait for a coordinator and the last try is at least a second old."""
        return bool(self._uncommitted) and time.monotonic() - self._last_try >= _RETRY_S

    def commit(self, batch: list[Message]) -> None:
        """Commit past every message of ``batch`` (its writes acknowledged) on owned partitions."""
        next_offsets: dict[tuple[str, int], int] = {}
        newest_ts = self.committed_ts
        for msg in batch:
            key = (msg.topic() or "", msg.partition() or 0)
            offset = (msg.offset() or 0) + 1
            if offset > next_offsets.get(key, 0):
                next_offsets[key] = offset
            ts = msg.timestamp()[1]
            if ts > newest_ts.get(key[1], 0):
                newest_ts[key[1]] = ts
        # Only partitions we still own. A batch retried through a backpressure may
        # hold messages of partitions the group moved to another worker meanwhile.
        # Writing them was harmless (the version guard makes writes idempotent), but
        # their offsets are not ours to commit: the new owner started from the last
        # committed offset and is replaying them itself, and our commit would move its
        # position under it. Skipping never loses anything: at worst it replays.
        # (A commit racing a rebalance we have not seen yet carries our old generation,
        # and the broker refuses it: ILLEGAL_GENERATION, handled below.)
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        moved = sorted(p for (t, p) in next_offsets if (t, p) not in owned)
        if moved:
            log.info("commit.skipped_revoked", partitions=moved)
        for tp_key, offset in next_offsets.items():
            if tp_key in owned:
                self._uncommitted[tp_key] = max(self._uncommitted.get(tp_key, 0), offset)
        self.flush()

    def flush(self) -> None:
        """Commit the acknowledged offsets synchronously; defer them while Kafka cannot."""
        self._last_try = time.monotonic()
        if not self._uncommitted:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code in _LOST_TO_REBALANCE:
                # The group moved on while we wrote: the new owner resumes from the
                # last committed offset and replays this batch, which the version
                # guard turns into stale skips. Nothing is lost; do not crash.
                self._uncommitted.clear()
                m.COMMITS_LOST.labels(self._migration).inc()
                log.warning("commit.lost_to_rebalance", error=str(err))
                return
            if code in _COMMIT_LATER or (isinstance(err, KafkaError) and err.retriable()):
                # Kafka is unreachable, not the data wrong: keep the offsets and try
                # again (next batch or idle loop). Not committing only means a crash
                # now replays these writes, which the version guard makes harmless.
                log.warning("commit.deferred", error=str(err), partitions=len(offsets))
                self._health.beat("backpressure", error=f"offset commit deferred: {err}")
                return
            raise
        for (topic, partition), offset in self._uncommitted.items():
            if topic == self._topic:
                self.committed[partition] = offset
        self._uncommitted.clear()

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Before ``partitions`` go to another member: commit what is deferred on them, forget."""
        # Offsets deferred while Kafka had no coordinator are committed now, while the
        # partitions are still ours (best effort: else a replay).
        revoked = {(p.topic, p.partition) for p in partitions}
        if revoked & self._uncommitted.keys():
            with contextlib.suppress(KafkaException):
                self.flush()
            for key in revoked:
                self._uncommitted.pop(key, None)
        for p in partitions:
            # Another member may commit it before it comes back: asked again then.
            if p.topic == self._topic:
                self.committed.pop(p.partition, None)

    def close(self) -> None:
        """One last try for offsets deferred while Kafka had no coordinator.

        Every batch was committed (or, on failure, deliberately not) before this; if
        this try fails too, the next owner replays them.
        """
        if self._uncommitted:
            with contextlib.suppress(KafkaException):
                self.flush()
            self._uncommitted.clear()  # not again in the revoke that close() runs
