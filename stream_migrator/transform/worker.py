"""Transform worker: consume a batch -> transform -> bulk write -> flush quarantine -> commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stream_migrator import events
from stream_migrator.errors import EnvelopeError, RetryableError, TransformError
from stream_migrator.interfaces import ApplyResult, DocumentSink, TargetWrite, Transformer
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.observability import metrics as m
from stream_migrator.observability.metrics import observe_all
from stream_migrator.runtime import StopFlag
from stream_migrator.transform.lag_gauges import LagGauges
from stream_migrator.transform.offsets import OffsetCommitter
from stream_migrator.transform.prepare import to_target_write
from stream_migrator.transform.quarantine import Quarantine

log = get_logger("transform")
_MAX_BACKOFF_S = 30.0
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
        self._offsets = OffsetCommitter(consumer, topic, migration, self._health)
        self._lag = LagGauges(consumer, topic, migration)
        # True while a batch is retried against a failing target: every owned
        # partition is paused, including those assigned during the outage.
        self._backpressure = False
        # Labelled metric children bound once: a labels() lookup per event cost more
        # than the observation itself.
        self._m_end_to_end = m.END_TO_END_SECONDS.labels(migration)
        self._m_written = m.EVENTS_APPLIED.labels(migration, "written")
        self._m_stale = m.EVENTS_APPLIED.labels(migration, "stale")
        self._m_coalesced = m.EVENTS_APPLIED.labels(migration, "coalesced")
        self._m_batch_events = m.BATCH_EVENTS.labels(migration)
        self._m_batch_seconds = m.BATCH_SECONDS.labels(migration)
        self._m_apply_seconds = m.APPLY_SECONDS.labels(migration)

    @property
    def lag(self) -> int | None:
        """Events not yet applied on the owned partitions, as last measured (None: unknown)."""
        return self._lag.lag

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
                if prepared is None and self._offsets.retry_due():
                    self._offsets.flush()
                self._lag.maybe_report(self._offsets)  # right after a commit: figures current
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
        self._offsets.close()
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
        self._offsets.commit(batch)
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
        self._offsets.revoked(partitions)

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
