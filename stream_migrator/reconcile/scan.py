"""The full pass: the ``_id`` space cut into segments, each scanned bucket by bucket.

One sorted pass per side and segment (``compare.read_sorted``: raw batches read
ahead by a thread), merge-joined by ``_id`` (``buckets.entries``). Segments run
in parallel threads; each saves its resume point with every finished bucket, so
a killed compare resumes after the last one.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream_migrator.id_order import after_id_filters, id_cmp, type_rank
from stream_migrator.id_sample import sample_ids
from stream_migrator.observability import get_logger
from stream_migrator.reconcile.buckets import Entry, entries, finish_bucket
from stream_migrator.reconcile.compare import read_sorted, read_stored
from stream_migrator.reconcile.counts import ScanCounts
from stream_migrator.reconcile.sides import Sides
from stream_migrator.runtime import StopFlag

log = get_logger("reconcile")


def plan_segments(sides: Sides) -> list[dict[str, Any]]:
    """Cut the _id space into ``reconcile_workers`` ranges of about equal size.

    Boundaries are quantiles of a sample of source ids. Range filters are
    type-bracketed in MongoDB, so the first segment is "not >= the first
    boundary", which also holds every id of another BSON type. Ids of mixed
    types in the sample fall back to one segment.
    """
    workers = sides.settings.reconcile_workers
    if workers > 1:
        ids = sample_ids(sides.source, workers * 64)
        kinds = {type_rank(i) for i in ids}
        if len(ids) >= workers * 4 and len(kinds) == 1:
            ids.sort(key=functools.cmp_to_key(id_cmp))
            bounds = [ids[len(ids) * k // workers] for k in range(1, workers)]
            bounds = [b for n, b in enumerate(bounds) if n == 0 or id_cmp(bounds[n - 1], b)]
            edges: list[Any] = [None, *bounds, None]
            return [
                {"lo": edges[k], "hi": edges[k + 1], "first": k == 0, "done": False}
                for k in range(len(edges) - 1)
            ]
        log.warning("reconcile.one_segment", reason="too few or mixed-type ids to split")
    return [{"lo": None, "hi": None, "first": True, "done": False}]


class FullScan:
    """Scans the unfinished segments of one run."""

    def __init__(self, sides: Sides, run_id: str) -> None:
        self._sides = sides
        self._run_id = run_id
        #: Most (id, hash, hash) entries one bucket ever held: the memory bound, for tests.
        self.max_bucket_entries = 0

    def run(self, segments: list[dict[str, Any]]) -> tuple[ScanCounts, bool]:
        """Scan every unfinished segment (in parallel threads); returns totals and completeness."""
        s = self._sides
        total = s.source.estimated_document_count() + s.target.estimated_document_count()
        scans = [ScanCounts.from_doc(seg.get("scan", {})) for seg in segments]
        todo = [n for n, seg in enumerate(segments) if not seg.get("done")]
        if len(todo) <= 1:
            finished = all(self._segment(n, segments[n], scans, total) for n in todo)
        else:
            with ThreadPoolExecutor(len(todo), thread_name_prefix="reconcile") as pool:
                futures = [pool.submit(self._segment, n, segments[n], scans, total) for n in todo]
                finished = all(f.result() for f in futures)
        return ScanCounts.total(scans), finished

    def _segment(self, n: int, seg: dict[str, Any], scans: list[ScanCounts], total: int) -> bool:
        """One sorted pass per side over a segment; returns False if stopped (progress saved)."""
        s, run_id = self._sides, self._run_id
        scan = scans[n]
        queries = _segment_queries(seg)
        size = s.bucket_size
        batch = min(size, 10_000)
        src = read_sorted(s.source, queries, batch=batch)
        tgt = read_stored(s.target, queries, batch=batch)
        bucket: list[Entry] = []
        paced = _Pacer(s.settings.reconcile_max_docs_per_second)
        try:
            for entry in entries(s, src, tgt, scan):
                bucket.append(entry)
                if len(bucket) >= size:
                    self._held(bucket)
                    finish_bucket(s, run_id, n, bucket, scan)
                    paced.wait(len(bucket), s.stop)
                    bucket = []
                    s.tick(sum(c.source_count + c.target_count for c in scans), total)
                    if s.stop.is_set():
                        log.warning("reconcile.interrupted", run=run_id, reason=s.stop.reason)
                        return False
            if bucket:
                self._held(bucket)
                finish_bucket(s, run_id, n, bucket, scan)
        finally:
            src.close()
            tgt.close()
        s.store.save(run_id, **{f"segments.{n}.done": True})
        s.tick(sum(c.source_count + c.target_count for c in scans), total)
        return True

    def _held(self, bucket: list[Entry]) -> None:
        """Note a full bucket's size: a bucket only grows until it is finished."""
        self.max_bucket_entries = max(self.max_bucket_entries, len(bucket))


def _segment_queries(seg: dict[str, Any]) -> list[dict[str, Any]]:
    """The filters that, run one after the other sorted by ``_id``, cover what is left of ``seg``.

    A fresh segment is one query. A resumed one continues after ``last_id`` with
    ``id_order.after_id_filters`` (``$gt`` stays inside ``last_id``'s BSON type
    bracket, so the later brackets need their own queries), each kept inside the
    segment's bounds.
    """
    if seg["first"] and seg["hi"] is not None:
        # "Not >= the first boundary": also every id of another BSON type (see plan_segments).
        bound: dict[str, Any] = {"_id": {"$not": {"$gte": seg["hi"]}}}
    else:
        bounds: dict[str, Any] = {}
        if seg["lo"] is not None:
            bounds["$gte"] = seg["lo"]
        if seg["hi"] is not None:
            bounds["$lt"] = seg["hi"]
        bound = {"_id": bounds} if bounds else {}
    if not seg.get("has_last"):
        return [bound]
    return [{"$and": [f, bound]} if bound else f for f in after_id_filters(seg["last_id"])]


class _Pacer:
    """Keeps the read rate under ``rate`` documents per second (0 = no cap)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._done = 0

    def wait(self, n: int, stop: StopFlag) -> None:
        if not self._rate:
            return
        self._done += n
        ahead = self._done / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            stop.wait(ahead)
