"""Transform worker: consume a batch -> transform -> bulk write -> flush quarantine -> commit."""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Histogram

from stream_migrator import events
from stream_migrator.errors import EnvelopeError, RetryableError, TransformError
from stream_migrator.interfaces import ApplyResult, DocumentSink, TargetWrite, Transformer
from stream_migrator.kafka import partition_positions
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.observability import metrics as m
from stream_migrator.runtime import StopFlag
from stream_migrator.transform.prepare import to_target_write
from stream_migrator.transform.quarantine import Quarantine

log = get_logger("transform")
_LAG_EVERY_S = 2.0
_MAX_BACKOFF_S = 30.0
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
_COMMIT_RETRY_S = 1.0
_QUARANTINE_WAIT_S = 10.0


class _Prepared(NamedTuple):
    """A consumed batch and its target writes, not yet written."""

    batch: list[Message]
    writes: list[TargetWrite]
    started: float  # monotonic, when its preparation began (sm_batch_seconds)


class _InFlight(NamedTuple):
    """A prepared batch whose write runs on the writer thread."""

    prepared: _Prepared
    future: Future[ApplyResult]


class TransformWorker:
    """One member of the transform consumer group."""

    def __init__(
        self,
        migration: str,
        topic: str,
        consumer: Consumer,
        transformer: Transformer,
        sink: DocumentSink,
        quarantine: Quarantine,
        stop: StopFlag,
        *,
        batch_size: int = 1000,
        batch_timeout_s: float = 0.5,
        health: HealthState | None = None,
        maintenance: Callable[[], None] | None = None,
        maintenance_every_s: float = 3600.0,
        decode: Callable[[bytes | None], events.ChangeEvent] = events.decode,
        is_echo: Callable[[events.ChangeEvent], bool] | None = None,
    ) -> None:
        self._migration = migration
        self._topic = topic
        self._consumer = consumer
        self._transformer = transformer
        self._sink = sink
        self._quarantine = quarantine
        self._stop = stop
        self._batch_size = batch_size
        self._batch_timeout_s = batch_timeout_s
        self._health = health or HealthState("transform")
        self._last_lag = 0.0
        self._maintenance = maintenance
        self._maintenance_every_s = maintenance_every_s
        # Kafka value -> ChangeEvent: our envelope, or a Kafka Connect source format.
        self._decode = decode
        # is_echo: marks writes the pipeline itself made (the reverse stream's sink
        # decides, after coalescing, not to carry them back).
        self._is_echo = is_echo
        self._last_maintenance = 0.0
        self.applied = 0
        self.stale = 0
        self.lag: int | None = None
        # Kafka timestamp (ms) of the newest committed event per partition: lag in seconds.
        self._committed_ts: dict[int, int] = {}
        # The group's committed offset per owned partition of the topic (None = never
        # committed): asked of Kafka once when a partition is assigned, then kept up
        # to date by our own commits, so measuring lag needs no request (see below).
        self._committed: dict[int, int | None] = {}
        self._lag_partitions: set[int] = set()
        # True while a batch is retried against a failing target: every owned
        # partition is paused, including those assigned during the outage.
        self._backpressure = False
        # Next offsets whose writes are acknowledged but whose commit failed for want
        # of a coordinator; retried until Kafka answers (a later commit covers them).
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._last_commit_try = 0.0
        # Labelled metric children bound once: a labels() lookup per event cost more
        # than the observation itself.
        self._m_end_to_end = m.END_TO_END_SECONDS.labels(migration)
        self._m_written = m.EVENTS_APPLIED.labels(migration, "written")
        self._m_stale = m.EVENTS_APPLIED.labels(migration, "stale")
        self._m_coalesced = m.EVENTS_APPLIED.labels(migration, "coalesced")
        self._m_batch_events = m.BATCH_EVENTS.labels(migration)
        self._m_batch_seconds = m.BATCH_SECONDS.labels(migration)
        self._m_apply_seconds = m.APPLY_SECONDS.labels(migration)

    def run(self) -> None:
        """Consume until stopped: batch n+1 is read and transformed while batch n is written.

        One batch is in flight at a time, on one writer thread; everything that touches
        the consumer (consume, commit, rebalance callbacks, pause) stays on this
        thread. The commit order holds per batch: batch n is committed only after its
        write was acknowledged and the quarantine flushed, and before batch n+1 is
        written, so commits go out in offset order and a document's writes reach the
        target in the order of its events.
        """
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        inflight: _InFlight | None = None
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sm-write")
        try:
            while not self._stop.is_set():
                # With a write in flight, take only what is already fetched: waiting for
                # more would delay that batch's commit.
                batch = [
                    msg
                    for msg in self._next_batch(wait=inflight is None)
                    if not self._is_noise(msg)
                ]
                prepared = self._prepare_batch(batch) if batch else None
                if inflight is not None:
                    done, inflight = inflight, None
                    if not self._finish(done):
                        # Abandoned on stop (target or Kafka still failing): the batch
                        # read behind it must not be written nor committed, or its
                        # offsets would pass the abandoned one's, which were never written.
                        break
                if (
                    prepared is None
                    and self._uncommitted
                    and (time.monotonic() - self._last_commit_try >= _COMMIT_RETRY_S)
                ):
                    self._flush_commits()
                self._maybe_report_lag()  # right after a commit: the figures are current
                self._maybe_maintain()  # between writes: nothing in flight
                if prepared is not None:
                    inflight = self._start_write(writer, prepared)
                self._health.beat("ok", applied=self.applied, lag=self.lag)
        finally:
            try:
                # Drain: the batch in flight is written and committed (or, on stop
                # while the target fails, deliberately not).
                if inflight is not None:
                    self._finish(inflight)
            finally:
                self._close(writer)

    def _close(self, writer: ThreadPoolExecutor) -> None:
        writer.shutdown(wait=True)
        # Every batch was committed (or, on failure, deliberately not) before control
        # returned to the loop, except offsets deferred while Kafka had no coordinator:
        # one last try; if it fails too, the next owner replays them.
        if self._uncommitted:
            with contextlib.suppress(KafkaException):
                self._flush_commits()
            self._uncommitted.clear()  # not again in the revoke that close() runs
        self._consumer.close()
        log.info("transform.stopped", reason=self._stop.reason, applied=self.applied)

    # -- batch ------------------------------------------------------------------
    def _next_batch(self, *, wait: bool = True) -> list[Message]:
        """What is already fetched, up to batch_size; if nothing is, wait for one event.

        Waits at most batch_timeout_s (not at all unless ``wait``), and only for the
        first event: a batch never waits to fill. Why: ``consume(n, timeout)`` returns
        only once n events are there or the timeout passed, so below n/timeout events
        per second every event waited the whole timeout before it was even
        transformed. A backlog still gives full batches: they come from the prefetch
        queue at once.
        """
        msgs = self._consumer.consume(self._batch_size, 0)
        if msgs or not wait:
            return msgs
        msgs = self._consumer.consume(1, self._batch_timeout_s)
        if msgs and self._batch_size > 1:
            msgs += self._consumer.consume(self._batch_size - 1, 0)
        return msgs

    def _prepare_batch(self, batch: list[Message]) -> _Prepared:
        started = time.monotonic()
        writes = [w for w in map(self._prepare, batch) if w is not None]
        return _Prepared(batch, writes, started)

    def _start_write(self, writer: ThreadPoolExecutor, prepared: _Prepared) -> _InFlight:
        return _InFlight(prepared, writer.submit(self._timed_apply, prepared.writes))

    def _timed_apply(self, writes: list[TargetWrite]) -> ApplyResult:
        attempt = time.monotonic()
        result = self._sink.apply(writes)
        self._m_apply_seconds.observe(time.monotonic() - attempt)
        return result

    def _finish(self, inflight: _InFlight) -> bool:
        """Wait for the batch's write (retrying it under backpressure), then commit it.

        False when the batch was abandoned on stop: neither committed nor to be passed.
        """
        prepared = inflight.prepared
        try:
            result: ApplyResult | None = inflight.future.result()
        except RetryableError as exc:
            result = self._apply_with_backpressure(prepared.writes, exc)
        return self._settle(prepared, result)

    def _process(self, batch: list[Message]) -> None:
        """Prepare, write and commit one batch without overlap (tests and tools)."""
        prepared = self._prepare_batch(batch)
        self._settle(prepared, self._apply_with_backpressure(prepared.writes))

    def _settle(self, prepared: _Prepared, result: ApplyResult | None) -> bool:
        """Quarantine the failed writes and commit the batch; False if abandoned on stop."""
        batch, writes = prepared.batch, prepared.writes
        if result is None:
            return False  # stopping while the target was failing: commit nothing
        for write, reason in result.failed:
            self._quarantine_msg(write.tag, "write", reason)
        # The commit order: target writes acknowledged (above) -> quarantine
        # producer flushed -> offsets committed synchronously. An offset is stored
        # only after its effect is durable, so a crash anywhere replays, never skips.
        if not self._flush_quarantine():
            return False  # stopping while Kafka was unreachable: commit nothing
        self._commit(batch)
        now_ms = time.time() * 1000
        observe_all(
            self._m_end_to_end,
            [max(0.0, (now_ms - w.tag.timestamp()[1]) / 1000) for w in writes],
        )
        self.applied += result.written
        self.stale += result.stale
        self._m_written.inc(result.written)
        self._m_stale.inc(result.stale)
        self._m_coalesced.inc(result.coalesced)
        if result.echoes:
            m.EVENTS_APPLIED.labels(self._migration, "echo").inc(result.echoes)
        self._m_batch_events.observe(len(batch))
        self._m_batch_seconds.observe(time.monotonic() - prepared.started)
        return True

    def _prepare(self, msg: Message) -> TargetWrite | None:
        try:
            event = self._decode(msg.value())
        except EnvelopeError as exc:
            self._quarantine_msg(msg, "decode", str(exc))
            return None
        try:
            write = to_target_write(event, self._transformer, msg)
        except TransformError as exc:
            self._quarantine_msg(msg, "transform", str(exc))
            return None
        if write is not None and self._is_echo is not None and self._is_echo(event):
            # Not dataclasses.replace: it costs three times the constructor.
            write = TargetWrite(write.doc_id, write.version, write.document, write.tag, echo=True)
        return write

    def _apply_with_backpressure(
        self, writes: list[TargetWrite], failed: RetryableError | None = None
    ) -> ApplyResult | None:
        """Retry transient target failures with backoff, partitions paused; never crash-loop.

        ``failed``: the error of an attempt already made (on the writer thread); the
        backoff starts at once. Nothing fetched while backing off is dropped: every
        partition we own stays paused (also those the group hands us meanwhile, see
        ``_on_assign``), and a message that arrives anyway is rewound, so it is read
        again after the outage.
        """
        backoff = 0.5
        try:
            while True:
                try:
                    if failed is not None:
                        error, failed = failed, None
                        raise error
                    return self._timed_apply(writes)
                except RetryableError as exc:
                    if self._stop.is_set():
                        log.warning("transform.abandon_batch_on_stop", error=str(exc))
                        return None
                    if not self._backpressure:
                        self._backpressure = True
                        self._consumer.pause(self._consumer.assignment())
                        m.BACKPRESSURE_PAUSES.labels(self._migration).inc()
                    m.WRITE_RETRIES.labels(self._migration).inc()
                    self._health.beat("backpressure", error=str(exc))
                    log.warning("transform.backpressure", error=str(exc), retry_in=backoff)
                    # consume() keeps us in the group (max.poll.interval.ms) and serves
                    # rebalances; on paused partitions it returns nothing. Anything it
                    # does return was fetched outside this batch: rewind it, never drop
                    # it, or the next commit of its partition would go past it.
                    for msg in self._consumer.consume(1, min(backoff, exc.retry_after * 4)):
                        if not self._is_noise(msg):
                            self._rewind(msg)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
        finally:
            if self._backpressure:
                self._backpressure = False
                # The assignment now, not the one at the pause: partitions revoked
                # meanwhile are not ours to resume, those assigned meanwhile are paused.
                self._consumer.resume(self._consumer.assignment())

    def _rewind(self, msg: Message) -> None:
        """Pause ``msg``'s partition and move its position back to ``msg``: it is read again."""
        tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        log.info("backpressure.rewound", partition=tp.partition, offset=tp.offset)

    def _flush_quarantine(self) -> bool:
        """Wait until Kafka acknowledged every quarantined event; False if stopped first.

        A broker that is down (restarting) is waited for, alive under backpressure:
        the events stay queued in the producer and the batch is not committed, so
        giving up (stop) only means a replay that quarantines them again.
        """
        while True:
            try:
                # Short waits, so a stop is noticed within seconds.
                self._quarantine.flush(_QUARANTINE_WAIT_S)
                return True
            except RetryableError as exc:
                if self._stop.is_set():
                    log.warning("transform.abandon_batch_on_stop", error=str(exc))
                    return False
                self._health.beat("backpressure", error=str(exc))
                log.warning("quarantine.flush_waiting", error=str(exc))

    def _quarantine_msg(self, msg: Message, stage: str, reason: str) -> None:
        with structlog.contextvars.bound_contextvars(
            topic=msg.topic(), partition=msg.partition(), offset=msg.offset()
        ):
            log.warning("event.quarantined", stage=stage, reason=reason)
        self._quarantine.send(msg, stage, reason)
        m.EVENTS_QUARANTINED.labels(self._migration, stage).inc()

    def _commit(self, batch: list[Message]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        newest_ts = self._committed_ts
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
        self._flush_commits()

    def _flush_commits(self) -> None:
        """Commit the acknowledged offsets synchronously; defer them while Kafka cannot."""
        self._last_commit_try = time.monotonic()
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
                self._committed[partition] = offset
        self._uncommitted.clear()

    # -- group membership and lag --------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions.assigned", partitions=[p.partition for p in partitions])
        if self._backpressure and partitions:
            # Handed over while our target is failing (e.g. a worker left the group):
            # assign them here ourselves (cooperative protocol: incrementally) so they
            # can be paused before the first fetch; resumed when the target is back.
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            log.info("partitions.paused_on_assign", partitions=[p.partition for p in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Revocation runs inside consume(): while the previous batch is being written
        # (the loop reads the next one meanwhile), or during a backpressure. That batch
        # is still written, but the revoked partitions' offsets are not committed (see
        # _commit): the new owner replays them, and the version guard makes that stale.
        # Offsets deferred while Kafka had no coordinator are committed now, while the
        # partitions are still ours (best effort: else a replay).
        log.info("partitions.revoked", partitions=[p.partition for p in partitions])
        revoked = {(p.topic, p.partition) for p in partitions}
        if revoked & self._uncommitted.keys():
            with contextlib.suppress(KafkaException):
                self._flush_commits()
            for key in revoked:
                self._uncommitted.pop(key, None)
        for p in partitions:
            # Another member may commit it before it comes back: asked again then.
            if p.topic == self._topic:
                self._committed.pop(p.partition, None)

    def _is_noise(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() == KafkaError._PARTITION_EOF:
            return True
        log.warning("kafka.consume_error", error=str(err))
        return True

    def _maybe_maintain(self) -> None:
        """Housekeeping between batches (tombstone purge), at start and then periodically."""
        if self._maintenance is None:
            return
        if self._last_maintenance and (
            time.monotonic() - self._last_maintenance < self._maintenance_every_s
        ):
            return
        self._last_maintenance = time.monotonic()
        try:
            self._maintenance()
        except RetryableError as exc:
            log.warning("maintenance.failed", error=str(exc))

    def _maybe_report_lag(self) -> None:
        """Lag from what this consumer already knows: no broker round trip in the loop.

        High watermarks come from librdkafka's cache, refreshed by every fetch
        response (so at most about fetch.wait.max.ms old on a caught-up partition;
        on a paused one, or one whose prefetch queue is full during a backlog, as
        old as its last fetch). Committed offsets are our own commits; only a newly
        assigned partition's is asked of the coordinator, once.
        """
        if time.monotonic() - self._last_lag < _LAG_EVERY_S:
            return
        self._last_lag = time.monotonic()
        owned = [tp.partition for tp in self._consumer.assignment() if tp.topic == self._topic]
        try:
            positions = partition_positions(
                self._consumer, self._topic, owned, committed=self._committed, cached=True
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
        self._report_partition_lag(lags)

    def _report_partition_lag(self, lags: dict[int, int]) -> None:
        """Per-partition lag in events and seconds; partitions no longer assigned are dropped.

        Seconds = now minus the Kafka timestamp of the newest committed event while
        events wait, so a stuck partition's figure grows with wall time (0 when caught
        up; unset until this worker has committed on it).
        """
        now_ms = time.time() * 1000
        for partition in self._lag_partitions - lags.keys():
            with contextlib.suppress(KeyError):
                m.PARTITION_LAG.remove(self._migration, str(partition))
            with contextlib.suppress(KeyError):
                m.PARTITION_LAG_SECONDS.remove(self._migration, str(partition))
        self._lag_partitions = set(lags)
        for partition, lag in lags.items():
            m.PARTITION_LAG.labels(self._migration, str(partition)).set(lag)
            ts = self._committed_ts.get(partition)
            if lag == 0:
                m.PARTITION_LAG_SECONDS.labels(self._migration, str(partition)).set(0)
            elif ts:
                seconds = max(0.0, (now_ms - ts) / 1000)
                m.PARTITION_LAG_SECONDS.labels(self._migration, str(partition)).set(seconds)


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one update per bucket.

    Why: ``observe`` takes a lock and walks the buckets in Python for every value;
    per event that was a few microseconds of the worker's budget. This updates the
    same internals ``observe`` does (prometheus_client's ``_upper_bounds``,
    ``_buckets``, ``_sum``), once per bucket per batch, and falls back to
    ``observe`` for a histogram without them.
    """
    if not values:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound >= value
    total.inc(sum(values))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
