"""The worker's own lag gauges, from what its consumer already knows (no broker round trip)."""

from __future__ import annotations

import contextlib
import time

from confluent_kafka import Consumer, KafkaException

from stream_migrator.kafka import partition_positions
from stream_migrator.observability import get_logger
from stream_migrator.observability import metrics as m
from stream_migrator.transform.offsets import OffsetCommitter

log = get_logger("transform")
_EVERY_S = 2.0


class LagGauges:
    """``sm_consumer_lag_events`` and the per-partition lag in events and seconds."""

    def __init__(self, consumer: Consumer, topic: str, migration: str) -> None:
        self._consumer = consumer
        self._topic = topic
        self._migration = migration
        self._last = 0.0
        self._partitions: set[int] = set()
        #: The last total (None until every owned partition was measured).
        self.lag: int | None = None

    def due(self) -> None:
        """Measure at the next :meth:`maybe_report`, whatever the interval."""
        self._last = 0.0

    def maybe_report(self, offsets: OffsetCommitter) -> None:
        """Measure and export, at most every 2 s.

        High watermarks come from librdkafka's cache, refreshed by every fetch
        response (so at most about fetch.wait.max.ms old on a caught-up partition;
        on a paused one, or one whose prefetch queue is full during a backlog, as
        old as its last fetch). Committed offsets are our own commits; only a newly
        assigned partition's is asked of the coordinator, once.
        """
        if time.monotonic() - self._last < _EVERY_S:
            return
        self._last = time.monotonic()
        owned = [tp.partition for tp in self._consumer.assignment() if tp.topic == self._topic]
        try:
            positions = partition_positions(
                self._consumer, self._topic, owned, committed=offsets.committed, cached=True
            )
        except KafkaException as exc:
            # A measurement, not the work: a coordinator that is slow to answer (e.g.
            # right after this process was paused) must not stop the worker. Keep the
            # last figures and try again at the next interval.
            log.warning("lag.unavailable", error=str(exc))
            return
        lags = {p: pos.lag for p, pos in positions.items()}
        # The sum only when every owned partition is known: a part is not "caught up".
        self.lag = sum(lags.values()) if owned and len(lags) == len(owned) else None
        if self.lag is not None:
            m.CONSUMER_LAG.labels(self._migration).set(self.lag)
        self._report_partitions(lags, offsets.committed_ts)

    def _report_partitions(self, lags: dict[int, int], committed_ts: dict[int, int]) -> None:
        """Per-partition lag in events and seconds; partitions no longer assigned are dropped.

        Seconds = now minus the Kafka timestamp of the newest committed event while
        events wait, so a stuck partition's figure grows with wall time (0 when caught
        up; unset until this worker has committed on it).
        """
        now_ms = time.time() * 1000
        for partition in self._partitions - lags.keys():
            with contextlib.suppress(KeyError):
                m.PARTITION_LAG.remove(self._migration, str(partition))
            with contextlib.suppress(KeyError):
                m.PARTITION_LAG_SECONDS.remove(self._migration, str(partition))
        self._partitions = set(lags)
        for partition, lag in lags.items():
            m.PARTITION_LAG.labels(self._migration, str(partition)).set(lag)
            ts = committed_ts.get(partition)
            if lag == 0:
                m.PARTITION_LAG_SECONDS.labels(self._migration, str(partition)).set(0)
            elif ts:
                seconds = max(0.0, (now_ms - ts) / 1000)
                m.PARTITION_LAG_SECONDS.labels(self._migration, str(partition)).set(seconds)
