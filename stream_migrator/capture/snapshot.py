"""The snapshot copy: one collection read by several ``_id`` ranges at once, resumable per range.

Ranges are cut at split points (``splitVector`` where the server has it, else a
``$sample`` of ids taken at quantiles in BSON order), computed once and stored
in the checkpoint, so a resume reads the same ranges and continues each after
its last copied ``_id`` (:func:`stream_migrator.id_order.range_id_filters`).

Why reader threads and one emitter, not N threads each producing: encoding an
event and handing it to the producer is CPU work under the GIL (bson and the
envelope encoder hold it), so N emitting threads would take turns, not run in
parallel. What parallel ranges win is the server's time: while one range's
next batch is scanned and sent, the others' are encoded. And with one emitter
the checkpoint stays simple and exact: the producer barrier runs while no
thread produces (``flush`` with producers still running may never see an empty
queue), and each range's ``last_id`` is the last document handed to the
producer before it.

Checkpoint (``snapshot`` field): one range is the format capture always wrote,
``{done, last_id, read_at}``; several are ``{done, read_at, ranges: [{lo, hi,
last_id, has_last, done, copied}, ...]}``. Either is read back.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from stream_migrator import events
from stream_migrator.capture.throttle import SnapshotThrottle
from stream_migrator.id_order import id_cmp, is_split_point, range_id_filters
from stream_migrator.id_sample import sample_ids
from stream_migrator.observability import get_logger
from stream_migrator.runtime import StopFlag

log = get_logger("capture")

#: A collection smaller than this many documents per range is copied as one range.
MIN_RANGE_DOCS = 500
#: Sampled ids per range for the ``$sample`` split points (quantiles of k*N ids).
SAMPLES_PER_RANGE = 32
_BATCH = 2_000
_QUEUED_PER_READER = 2  # batches a reader may have read ahead of the emitter


@dataclass
class IdRange:
    """One range ``lo < _id <= hi`` (None: open end) and how far its copy got."""

    lo: Any = None
    hi: Any = None
    last_id: Any = None
    has_last: bool = False  # last_id is a copied id (it may be the null _id)
    done: bool = False
    copied: int = 0

    def queries(self) -> list[dict[str, Any]]:
        """The filters, run in order sorted by ``_id``, that read what is left of the range."""
        if self.has_last:
            return range_id_filters(self.last_id, self.hi, lo_is_null=self.last_id is None)
        return range_id_filters(self.lo, self.hi)

    def to_doc(self) -> dict[str, Any]:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "last_id": self.last_id,
            "has_last": self.has_last,
            "done": self.done,
            "copied": self.copied,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> IdRange:
        return cls(
            lo=doc.get("lo"),
            hi=doc.get("hi"),
            last_id=doc.get("last_id"),
            has_last=bool(doc.get("has_last")),
            done=bool(doc.get("done")),
            copied=int(doc.get("copied", 0)),
        )


def ranges_between(points: Sequence[Any]) -> list[IdRange]:
    """``(None, p1], (p1, p2], ..., (pk, None)`` for split points in BSON order."""
    edges: list[Any] = [None, *points, None]
    return [IdRange(lo=edges[k], hi=edges[k + 1]) for k in range(len(edges) - 1)]


def ranges_from_checkpoint(snapshot: Mapping[str, Any]) -> list[IdRange] | None:
    """The ranges a checkpoint recorded; None if it recorded none yet (plan them).

    The single-range format (``last_id`` only, what capture wrote before ranges) is
    one open range resumed after ``last_id``; a None ``last_id`` there is "not started".
    """
    stored = snapshot.get("ranges")
    if stored:
        return [IdRange.from_doc(r) for r in stored]
    last_id = snapshot.get("last_id")
    if last_id is not None:
        return [IdRange(last_id=last_id, has_last=True)]
    return None


def split_vector_points(reply: Mapping[str, Any], parallelism: int) -> list[Any]:
    """``parallelism - 1`` split points from a ``splitVector`` reply, evenly among its keys.

    The reply is ``{"timeMillis": t, "splitKeys": [{"_id": v}, ...], "ok": 1}``, keys in
    index order; the server may give more keys than asked (it splits every
    ``maxChunkObjects`` keys), so every ``len/parallelism``-th is taken.
    """
    keys = [k["_id"] for k in reply.get("splitKeys", []) if "_id" in k]
    return evenly(_clean(keys), parallelism)


def sample_split_points(ids: Sequence[Any], parallelism: int) -> list[Any]:
    """Quantiles of sampled ids in BSON order: ``parallelism - 1`` split points."""
    return evenly(_clean(ids), parallelism)


def evenly(points: Sequence[Any], parallelism: int) -> list[Any]:
    """``parallelism - 1`` of ``points`` (sorted, distinct) cutting them into even parts."""
    if parallelism <= 1 or not points:
        return []
    if len(points) < parallelism:
        return list(points)
    # len(points) candidates cut the data into len+1 parts; take every (len+1)/N-th.
    step = (len(points) + 1) / parallelism
    chosen = [points[min(len(points) - 1, round(step * k) - 1)] for k in range(1, parallelism)]
    return [p for n, p in enumerate(chosen) if n == 0 or id_cmp(chosen[n - 1], p) < 0]


def _clean(ids: Sequence[Any]) -> list[Any]:
    """Usable split points of ``ids``, sorted in BSON order, each once."""
    usable = sorted((i for i in ids if is_split_point(i)), key=functools.cmp_to_key(id_cmp))
    return [p for n, p in enumerate(usable) if n == 0 or id_cmp(usable[n - 1], p) < 0]


def plan_ranges(coll: Collection[Any], parallelism: int) -> tuple[list[IdRange], str]:
    """The ranges to copy ``coll`` by, and how their split points were found.

    One range when asked for one, or when the collection holds fewer than
    ``MIN_RANGE_DOCS`` documents per range. Else ``splitVector`` on the ``_id`` index
    (MongoDB, one index scan); where the server refuses it (not authorized, no such
    command: Atlas' shared tiers, mongo-java-server) a ``$sample`` of ids.
    """
    if parallelism <= 1:
        return [IdRange()], "one range asked"
    count = coll.estimated_document_count()
    if count < parallelism * MIN_RANGE_DOCS:
        return [IdRange()], f"{count} documents: too few to split"
    try:
        points, method = _split_vector(coll, parallelism), "splitVector"
    except OperationFailure as exc:
        log.info("snapshot.split_vector_unavailable", code=exc.code, error=str(exc)[:200])
        points = sample_split_points(sample_ids(coll, parallelism * SAMPLES_PER_RANGE), parallelism)
        method = "$sample"
    if not points:
        return [IdRange()], f"{method} found no split point"
    return ranges_between(points), method


def _split_vector(coll: Collection[Any], parallelism: int) -> list[Any]:
    # splitVector splits every keyCount = min(maxChunkObjects, maxChunkSizeBytes /
    # (2 * average size)) keys, and returns nothing when dataSize < maxChunkSizeBytes:
    # the size bound is the data size itself, so the object count decides.
    stats = coll.database.command("collStats", coll.name)
    size, count = int(stats.get("size", 0)), int(stats.get("count", 0))
    if size <= 0 or count <= 0:
        return []
    reply = coll.database.command(
        "splitVector",
        coll.full_name,
        keyPattern={"_id": 1},
        maxChunkSizeBytes=size,
        maxChunkObjects=max(1, math.ceil(count / parallelism)),
    )
    return split_vector_points(reply, parallelism)


_Item = tuple[int, bytes | None] | BaseException | None
_PROGRESS_EVERY = 200  # documents between two progress reports (a bar redraws at most 10/s)


class ParallelSnapshot:
    """Copies every unfinished range, ``parallelism`` ranges read at once; one call per copy.

    ``emit(doc, read_at)`` produces one document; ``commit(snapshot)`` is capture's
    commit order (producer barrier, then save the checkpoint). Both are called on
    the calling thread only.
    """

    def __init__(
        self,
        source: Collection[Any],
        emit: Callable[[RawBSONDocument, int], None],
        commit: Callable[[dict[str, Any]], None],
        stop: StopFlag,
        *,
        parallelism: int,
        throttle: SnapshotThrottle | None = None,
        chunk: int = 5_000,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._source = source
        # progress(copied): documents copied so far, those of earlier runs included.
        self._progress = progress
        self._emit = emit
        self._commit = commit
        self._stop = stop
        self._parallelism = parallelism
        self._throttle = throttle
        self._chunk = chunk
        self._copied = 0
        self._before = 0
        self._since_commit = 0

    def run(self, snapshot: Mapping[str, Any], read_at: int) -> bool:
        """Copy what is left; True when every range is done, False if stopped first."""
        ranges = ranges_from_checkpoint(snapshot)
        method = "resumed"
        if ranges is None:
            ranges, method = plan_ranges(self._source, self._parallelism)
            if len(ranges) > 1:
                # Stored before the first read: a resume reads by the same ranges.
                self._commit(self._state(ranges, read_at, done=False))
        log.info(
            "snapshot.start",
            ranges=[_describe(r) for r in ranges],
            split_by=method,
            parallelism=min(self._parallelism, sum(not r.done for r in ranges)) or 1,
        )
        copied = self._copy(ranges, read_at)
        if copied is None:
            return False
        self._commit(self._state(ranges, read_at, done=True))
        log.info("snapshot.done", copied=copied, per_range=[r.copied for r in ranges])
        return True

    # -- internals --------------------------------------------------------------
    def _copy(self, ranges: list[IdRange], read_at: int) -> int | None:
        """Emit every unfinished range's documents; the count, or None if stopped."""
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for n, r in enumerate(ranges):
            if not r.done:
                todo.put(n)
        queries = {n: r.queries() for n, r in enumerate(ranges)}
        readers = max(1, min(self._parallelism, sum(not r.done for r in ranges)))
        out: queue.Queue[_Item] = queue.Queue(maxsize=readers * _QUEUED_PER_READER)
        halt = threading.Event()
        threads = [
            threading.Thread(
                target=self._read,
                args=(todo, queries, out, halt),
                name=f"snapshot-read-{k}",
                daemon=True,
            )
            for k in range(readers)
        ]
        for t in threads:
            t.start()
        self._copied = self._since_commit = 0
        self._before = sum(r.copied for r in ranges)  # by earlier runs of this snapshot
        running = readers
        try:
            while running:
                item = out.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item  # capture's retry loop resumes from the last checkpoint
                elif item[1] is None:
                    ranges[item[0]].done = True  # its reader sent every batch before this
                elif not self._emit_batch(ranges, item[0], item[1], read_at):
                    return None
            return self._copied
        finally:
            halt.set()
            for t in threads:
                t.join(timeout=5.0)

    def _emit_batch(self, ranges: list[IdRange], n: int, batch: bytes, read_at: int) -> bool:
        """Emit one raw batch of range ``n``, checkpointing on the way; False if stopped."""
        current = ranges[n]
        docs: list[RawBSONDocument] = bson.decode_all(batch, events.RAW_OPTIONS)
        for doc in docs:
            if self._throttle is not None:
                self._throttle.admit()
            self._emit(doc, read_at)
            current.copied += 1
            self._copied += 1
            self._since_commit += 1
            if self._progress is not None and self._copied % _PROGRESS_EVERY == 0:
                self._progress(self._before + self._copied)
            if self._since_commit >= self._chunk:
                # Only documents already handed to the producer are recorded: the
                # commit's barrier covers every range up to its last_id.
                current.last_id, current.has_last = doc["_id"], True
                self._since_commit = 0
                self._commit(self._state(ranges, read_at, done=False))
                log.info(
                    "snapshot.progress",
                    copied=self._copied,
                    per_range=[r.copied for r in ranges],
                )
                if self._stop.is_set():
                    return False
        if docs:
            current.last_id, current.has_last = docs[-1]["_id"], True
            if self._progress is not None:
                self._progress(self._before + self._copied)
        return True

    def _read(
        self,
        todo: queue.SimpleQueue[int],
        queries: dict[int, list[dict[str, Any]]],
        out: queue.Queue[_Item],
        halt: threading.Event,
    ) -> None:
        """Reader thread: take ranges from ``todo`` and send their raw batches, in _id order."""
        try:
            while not halt.is_set():
                try:
                    n = todo.get_nowait()
                except queue.Empty:
                    break
                for query in queries[n]:
                    cursor = self._source.find_raw_batches(query).sort("_id", 1).batch_size(_BATCH)
                    try:
                        for batch in cursor:
                            if not _put(out, (n, batch), halt):
                                return
                    finally:
                        cursor.close()
                if not _put(out, (n, None), halt):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised on the emitting thread
            _put(out, exc, halt)
            return
        _put(out, None, halt)

    @staticmethod
    def _state(ranges: list[IdRange], read_at: int, *, done: bool) -> dict[str, Any]:
        if len(ranges) == 1 and ranges[0].lo is None and ranges[0].hi is None:
            # One open range: the checkpoint capture has always written.
            only = ranges[0]
            last_id = only.last_id if only.has_last else None
            return {"done": done, "last_id": last_id, "read_at": read_at}
        return {"done": done, "read_at": read_at, "ranges": [r.to_doc() for r in ranges]}


def _put(out: queue.Queue[_Item], item: _Item, halt: threading.Event) -> bool:
    """Queue ``item`` unless the copy is over; False once it is (the reader then ends)."""
    while not halt.is_set():
        try:
            out.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _describe(r: IdRange) -> dict[str, Any]:
    return {
        "after": None if r.lo is None else repr(r.lo),
        "to": None if r.hi is None else repr(r.hi),
        "resume_after": repr(r.last_id) if r.has_last else None,
        "done": r.done,
    }
