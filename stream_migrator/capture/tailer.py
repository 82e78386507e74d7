"""Change-stream capture: snapshot, then tail; checkpoint only behind Kafka acknowledgements."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import bson
from bson import Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.change_stream import ChangeStream
from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError

from stream_migrator import events
from stream_migrator.capture.snapshot import ParallelSnapshot
from stream_migrator.capture.split_events import SplitEventAssembler
from stream_migrator.capture.throttle import SnapshotThrottle
from stream_migrator.capture.transactions import TransactionFolder
from stream_migrator.errors import EnvelopeError, FatalError, RetryableError
from stream_migrator.interfaces import CheckpointStore
from stream_migrator.kafka import AckedProducer
from stream_migrator.mongo import majority_read_time, on_primary
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.observability import metrics as m
from stream_migrator.progress import Progress
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings

_DATA_OPS = {"insert", "update", "replace", "delete"}
_HISTORY_LOST = {286, 280}  # ChangeStreamHistoryLost, ChangeStreamFatalError
_SNAPSHOT_CHUNK = 5_000
# A tail pauses this long after an empty answer that came at once, and never longer:
# MongoDB's awaitData getMore returns as soon as an event arrives (it waits up to
# max_await_time_ms only while there is none), so a pause adds latency MongoDB does not
# have. It exists for a server that answers an empty getMore at once (mongo-java-server)
# so that a quiet stream does not spin a core; the event after it waits at most this.
# A pause that doubled up to 0.5 s while the stream looked idle made the first event after
# any short gap wait up to 0.5 s: source write -> in Kafka was 434 ms at p99 at 1,000
# writes/s on the stand-in with it, 57 ms with this.
_IDLE_PAUSE_S = 0.05

log = get_logger("capture")


class Capture:
    """Copies one source collection into the change topic, then follows its change stream."""

    def __init__(
        self,
        settings: Settings,
        client: MongoClient[dict[str, Any]],
        producer: AckedProducer,
        checkpoints: CheckpointStore,
        stop: StopFlag,
        health: HealthState | None = None,
        throttle: SnapshotThrottle | None = None,
        split_events: bool = False,
    ) -> None:
        self._s = settings
        self._throttle = throttle
        self._split_events = split_events
        db, coll = settings.split_ns(settings.source)
        self._client = client
        self._coll = client[db][coll]
        self._producer = producer
        self._checkpoints = checkpoints
        self._stop = stop
        self._health = health or HealthState("capture")
        self._pending: Counter[str] = Counter()
        # Read once: settings' derived names are computed on every access, _emit runs per event.
        self._topic = settings.changes_topic
        self._max_bytes = settings.max_event_bytes
        self.captured = 0
        self.folded = 0  # events of a transaction replaced by a later one of their document

    # -- public -----------------------------------------------------------------
    def run(self) -> None:
        """Run until the stop flag is set; transient failures back off and resume."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._run_once()
                break
            except RetryableError as exc:
                log.warning("capture.retry", error=str(exc), retry_after=exc.retry_after)
                self._back_off(exc.retry_after, str(exc))
            except OperationFailure as exc:
                lost = history_lost_error(exc, self._s.source)
                if lost is not None:
                    raise lost from exc
                log.warning("capture.mongo_error", code=exc.code, error=str(exc))
                self._back_off(backoff, str(exc))
                backoff = min(backoff * 2, 30.0)
            except PyMongoError as exc:
                log.warning("capture.mongo_unavailable", error=str(exc), retry_after=backoff)
                self._back_off(backoff, str(exc))
                backoff = min(backoff * 2, 30.0)
        # Every way out but an error says so: stopped while tailing, mid-snapshot,
        # while backing off, or before it even started.
        log.info(
            "capture.stopped",
            reason=self._stop.reason,
            captured=self.captured,
            folded=self.folded,
        )

    def _back_off(self, seconds: float, error: str) -> None:
        """Wait out a failure while beating ``backpressure``: alive (/healthz 200), not ready.

        Without the beats a MongoDB outage longer than the health window made
        /healthz 503, and a liveness probe would restart capture in a loop.
        """
        deadline = time.monotonic() + seconds
        while True:
            self._health.beat("backpressure", error=error[:300])
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.wait(min(5.0, left)):
                return

    # -- internals --------------------------------------------------------------
    def _run_once(self) -> None:
        state = self._checkpoints.load()
        if state is not None and state.get("stopped"):
            stopped = state["stopped"]
            raise FatalError(
                f"capture of {self._s.source} stopped at a '{stopped.get('reason')}' event "
                f"({stopped.get('at')}) and will not continue on its own. If the collection "
                "was recreated, start over with `capture --resnapshot`; to continue from a "
                "known point use `--resume-after TOKEN` or `--start-at TIME`."
            )
        if state is None:
            # Why before the snapshot: every change from here on is replayed after
            # the snapshot, so nothing that happens while we copy can be missed.
            # Taken as a majority read time (next tick), so it is <= the read time the
            # snapshot stamps: a primary's $clusterTime can be ahead of what a majority
            # read sees, and the writes in between would be in neither stream nor copy.
            start = majority_read_time(self.snapshot_source, after_past=True)
            self._checkpoints.save(
                start_at=events.version_of(start),
                source=self._s.source,
                snapshot={"done": False, "last_id": None},
            )
            log.info("capture.position_taken", start_at=str(start))
            state = self._checkpoints.load() or {}
        if not state.get("snapshot", {}).get("done"):
            if not self._snapshot(state):
                return
            state = self._checkpoints.load() or {}
        self._tail(state)

    @property
    def snapshot_source(self) -> Collection[dict[str, Any]]:
        """The source as the snapshot reads it: primary, majority read concern.

        Whatever the URI's read preference: the version stamped on a copied document
        must bound the changes replayed after it, so the read must contain every
        change up to that version (a secondary may lag; a local read may later roll back).
        """
        return on_primary(self._coll)

    def _snapshot(self, state: dict[str, Any]) -> bool:
        """Copy documents in _id order; returns False if stopped before the end."""
        try:
            return self._copy(state)
        finally:
            if self._throttle is not None:
                self._throttle.close()  # its lag probe has nothing to guard while tailing

    def _copy(self, state: dict[str, Any]) -> bool:
        source = self.snapshot_source
        # A majority read time taken before the first read: every document copied
        # contains every write up to it, so a replayed change newer than this still
        # applies and one at or before it (already in the copy) is rejected. One for
        # every range: their readers all start after it.
        read_at = events.version_of(majority_read_time(source))
        # A bar on a terminal, else `progress` log lines with rate and ETA (the count
        # is the collection's metadata: an estimate).
        with Progress(
            "snapshot", source.estimated_document_count(), estimated=True, unit="docs"
        ) as progress:
            copy = ParallelSnapshot(
                source,
                self._emit_snapshot,
                lambda snapshot: self._commit(snapshot=snapshot),
                self._stop,
                parallelism=self._s.snapshot_parallelism,
                throttle=self._throttle,
                chunk=_SNAPSHOT_CHUNK,
                progress=progress.update,
            )
            return copy.run(state.get("snapshot", {}), read_at)

    def _emit_snapshot(self, doc: RawBSONDocument, read_at: int) -> None:
        # Raw: the document's bytes go into its envelope as the server sent them,
        # never decoded and encoded again (only a checkpoint's last _id is decoded).
        key = events.id_key(doc)
        assert key is not None  # a stored document always has an _id
        self._emit("snapshot", key, events.bson_of(doc), read_at, None)

    def _tail(self, state: dict[str, Any]) -> None:
        token = state.get("resume_token")
        kwargs: dict[str, Any]
        if token is not None:
            kwargs = {"resume_after": token}
        else:
            kwargs = {"start_at_operation_time": events.timestamp_of(state["start_at"])}
        pipeline: list[dict[str, Any]] = []
        if self._split_events:
            pipeline.append({"$changeStreamSplitLargeEvent": {}})
        log.info(
            "stream.open", split_events=self._split_events, **{k: str(v) for k, v in kwargs.items()}
        )
        with self._coll.with_options(codec_options=events.RAW_OPTIONS).watch(
            pipeline,
            full_document="updateLookup",
            max_await_time_ms=500,
            batch_size=5_000,  # fewer getMores: mongo-java-server scans its oplog per getMore
            **kwargs,
        ) as stream:
            self._follow(stream, token)

    def _follow(self, stream: ChangeStream[Any], saved: Any) -> None:
        last_commit = time.monotonic()
        unsaved = 0
        assembler = SplitEventAssembler()
        # Holds the events of one cluster time (a transaction) until the group is
        # complete and emits each document's last one: equal versions would make the
        # sink drop the later event of a document.
        folder = TransactionFolder(saved if stream.resume_token is None else stream.resume_token)
        try:
            while not self._stop.is_set():
                asked = time.monotonic()
                change = stream.try_next()
                ready: list[Mapping[str, Any]] = []
                if change is None:
                    if time.monotonic() - asked < _IDLE_PAUSE_S:
                        # An empty answer at once (a server that ignores maxAwaitTimeMS):
                        # without this pause an idle tail would keep it and a core busy.
                        self._stop.wait(_IDLE_PAUSE_S)
                    if not assembler.pending:
                        # Nothing more to read: a committed transaction's events come
                        # all at once, so the held group is complete.
                        ready = folder.idle(stream.resume_token)
                else:
                    whole = assembler.add(change)
                    if whole is not None:
                        ready = folder.add(whole)
                for event in ready:
                    self._handle(event, stream)
                    unsaved += 1
                # Only the folder's position: never inside a held group, nor between the
                # fragments of a split event (a resume there would lose their first part).
                position = folder.position
                due = time.monotonic() - last_commit >= self._s.checkpoint_interval_s
                # Checkpoint when enough piled up, or on a timer even when idle: the
                # post-batch token advances on a quiet collection so it never falls off
                # the oplog.
                if position is not None and (
                    unsaved >= 10_000 or (due and (unsaved or position != saved))
                ):
                    saved = position
                    self._commit(resume_token=saved)
                    unsaved, last_commit = 0, time.monotonic()
                elif change is None:
                    self._health.beat("ok", captured=self.captured)
        finally:
            self.folded += folder.folded
        # Graceful stop: everything emitted is produced; make it durable, then record
        # the position before the held group (a restart reads the group again).
        if folder.position is None:
            self._commit()
        else:
            self._commit(resume_token=folder.position)

    def _handle(self, change: Mapping[str, Any], stream: ChangeStream[Any]) -> None:
        op = change.get("operationType")
        if op in _DATA_OPS:
            ts: Timestamp = change["clusterTime"]
            try:
                key, doc = events.change_key(change)
            except EnvelopeError as exc:
                raise FatalError(f"{exc}; refusing to continue rather than lose it") from exc
            if key is None:
                log.warning("stream.update_without_key", token=events.token_text(change["_id"]))
                return
            document = None if doc is None else events.bson_of(doc)
            token = events.bson_of(change["_id"])
            self._emit(op, key, document, events.version_of(ts), token)
            m.CAPTURE_LAG.labels(self._s.migration).set(max(0.0, time.time() - ts.time))
        elif op in {"drop", "rename", "dropDatabase", "invalidate"}:
            # Everything before this event is in Kafka once the barrier passes; record
            # where and why we stopped so a restart refuses to guess what to do next.
            self._commit(resume_token=change["_id"])
            self._checkpoints.save(
                stopped={"reason": op, "at": change.get("clusterTime"), "token": change["_id"]}
            )
            log.error("stream.source_gone", op=op, token=events.token_text(change["_id"]))
            raise FatalError(
                f"source collection {self._s.source} saw '{op}': the stream ends here. "
                "Everything before it is captured and checkpointed; decide whether the "
                "migration should continue before restarting capture."
            )
        else:
            log.info("stream.skipped_event", op=op)

    def _emit(
        self, op: events.Op, key: bytes, doc: bytes | None, version: int, token: bytes | None
    ) -> None:
        """Produce one event; key, document and token are BSON bytes (see events.encode_raw).

        Called on one thread at a time (the tail, or the snapshot's one emitter: its
        reader threads only read), so ``_pending`` needs no lock.
        """
        value = events.encode_raw(
            op, self._s.source, key, doc, version, int(time.time() * 1000), token
        )
        if len(value) > self._max_bytes:
            self._quarantine_oversize(op, key, version, token, len(value))
            return
        self._producer.produce(self._topic, key, value)
        self._pending[op] += 1

    def _quarantine_oversize(
        self, op: events.Op, key: bytes, version: int, token: bytes | None, size: int
    ) -> None:
        """An event Kafka would refuse: quarantine its key and version, never crash."""
        doc_id = bson.decode(key, events.BSON_OPTIONS)["_id"]
        reason = (
            f"event for _id {doc_id!r} is {size} bytes, over the limit of "
            f"{self._s.max_event_bytes} (SM_MAX_EVENT_BYTES; raise it together with the "
            "topic's max.message.bytes)"
        )
        stub = events.encode_raw(
            op, self._s.source, key, None, version, int(time.time() * 1000), token
        )
        self._producer.produce(
            self._s.quarantine_topic,
            key,
            stub,
            headers=[("sm.stage", b"capture"), ("sm.reason", reason.encode())],
        )
        m.EVENTS_QUARANTINED.labels(self._s.migration, "oversize").inc()
        log.error("event.oversize", doc_id=str(doc_id), size=size)

    def _commit(self, **checkpoint: Any) -> None:
        """Barrier on Kafka acknowledgements, then persist the position (never the other way)."""
        self._producer.barrier()
        for op, count in self._pending.items():
            m.EVENTS_CAPTURED.labels(self._s.migration, op).inc(count)
            self.captured += count
        self._pending.clear()
        self._checkpoints.save(**checkpoint)
        m.CHECKPOINTS.labels(self._s.migration).inc()
        self._health.beat("ok", captured=self.captured)


def history_lost_error(exc: OperationFailure, source: str) -> FatalError | None:
    """The clear, fatal error for a resume point that fell off the oplog (else None)."""
    if exc.code not in _HISTORY_LOST:
        return None
    return FatalError(
        f"the change stream on {source} cannot resume: the checkpointed position is no "
        "longer in the oplog (history lost, server code "
        f"{exc.code}). Changes after it were NOT captured, so the target may be missing "
        "writes. Run `stream-migrator capture --resnapshot` to copy the collection again "
        "(safe: the version guard skips what the target already has), and enlarge the "
        "oplog so capture downtime stays inside its window.",
        code=exc.code,
    )
