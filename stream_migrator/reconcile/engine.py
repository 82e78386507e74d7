"""The bucketed, resumable, recheck-aware compare of transform(source) against target.

One sorted pass per side (``compare.read_sorted``: raw batches read ahead by a
thread), merge-joined by ``_id`` and cut into buckets of N consecutive ids. A
bucket holds only ``(id, hash, hash)`` entries, never documents, so memory is
O(bucket) whatever the collection size. A target copy byte-identical to the
migrated document shares one hash with it (no canonical encoding is computed,
``compare.agrees_exactly``); any other pair gets canonical hashes. A bucket
whose entries all agree is clean; otherwise it is drilled into, and only its
differing ids become *suspects*, stored in the
metadata database (``reconcile_suspects``) with the run's progress
(``reconcile_runs``): a killed compare resumes after the last finished bucket.

Suspects are rechecked with an indexed ``{_id: {$in: [...]}}`` read of both
sides once the transform group's lag has reached 0 (plus a settle delay for
capture). A suspect that now matches was in flight; one whose source changed
after the recheck round began is still in flight and waits (up to the recheck
timeout); everything else is a divergence, classified with a field-level diff.

A source document the spec rejects is never "agreeing": found by the scan or by
a recheck, it is stored as a final ``untransformable`` suspect with the spec's
reason, so the report names it and the verdict stays NOT READY until it is fixed
and replayed. What "agrees" means is ``compare.classify``, shared with
``full_compare``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from stream_migrator import events
from stream_migrator.errors import ConfigError
from stream_migrator.id_order import after_id_filters, id_cmp, type_rank
from stream_migrator.mongo import cluster_time_now
from stream_migrator.observability import get_logger
from stream_migrator.reconcile.canonical import (
    doc_hash,
    generic_path,
    leaf_paths,
    schema_paths,
)
from stream_migrator.reconcile.compare import (
    Difference,
    Expectation,
    StoredDoc,
    agrees_exactly,
    classify,
    expect,
    merge_join,
    read_sorted,
    read_stored,
)
from stream_migrator.reconcile.lag import LagProbe, LagReport, latest_change_versions
from stream_migrator.reconcile.report import ReconcileReport, decide, wilson_interval
from stream_migrator.reconcile.runs import UNTRANSFORMABLE, RunStore
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import META_FIELD, MigrationSpec, get_spec

log = get_logger("reconcile")

_UNTRANSFORMABLE = b"\x00untransformable"  # hash marker of a document in quarantine
ProgressFn = Callable[[int, int], None]


@dataclass
class _Entry:
    doc_id: Any
    expected: bytes | None  # hash of transform(source); None = no source document
    actual: bytes | None  # hash of target; None = no target document
    rejected: str | None = None  # the spec's reason when the source is untransformable


@dataclass
class _Scan:
    """Counters of one compare pass; persisted with every bucket so a resume continues them."""

    source_count: int = 0
    target_count: int = 0
    untransformable: int = 0
    buckets: int = 0
    drilled: int = 0
    filtered: int = 0
    coverage: Counter[str] = field(default_factory=Counter)

    def to_doc(self) -> dict[str, Any]:
        return {
            "source_count": self.source_count,
            "target_count": self.target_count,
            "untransformable": self.untransformable,
            "buckets": self.buckets,
            "drilled": self.drilled,
            "filtered": self.filtered,
            # Field paths contain dots, which MongoDB field names must not: store pairs.
            "coverage": [[p, n] for p, n in self.coverage.items()],
        }

    @classmethod
    def total(cls, scans: list[_Scan]) -> _Scan:
        out = cls()
        for s in scans:
            out.source_count += s.source_count
            out.target_count += s.target_count
            out.untransformable += s.untransformable
            out.buckets += s.buckets
            out.drilled += s.drilled
            out.filtered += s.filtered
            out.coverage.update(s.coverage)
        return out

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> _Scan:
        return cls(
            source_count=doc.get("source_count", 0),
            target_count=doc.get("target_count", 0),
            untransformable=doc.get("untransformable", 0),
            buckets=doc.get("buckets", 0),
            drilled=doc.get("drilled", 0),
            filtered=doc.get("filtered", 0),
            coverage=Counter({p: n for p, n in doc.get("coverage", [])}),
        )


class Reconciler:
    """Runs one compare (full or sampled) of a migration and builds its report."""

    def __init__(
        self,
        settings: ReconcileSettings,
        client: MongoClient[dict[str, Any]],
        lag_probe: LagProbe,
        *,
        stop: StopFlag | None = None,
        progress: ProgressFn | None = None,
        spec: MigrationSpec | None = None,
    ) -> None:
        self._s = settings
        self._client = client
        self._lag = lag_probe
        self._stop = stop or StopFlag()
        self._progress = progress
        self._spec = spec or get_spec(settings.spec, settings.hook_policy)
        sdb, scoll = settings.split_ns(settings.source)
        tdb, tcoll = settings.split_ns(settings.target)
        self.source: Collection[dict[str, Any]] = client[sdb][scoll]
        self.target: Collection[dict[str, Any]] = client[tdb][tcoll]
        self._store = RunStore(client, settings.metadata_db, settings.migration)
        #: Most (id, hash, hash) entries one bucket ever held: the memory bound, for tests.
        self.max_bucket_entries = 0
        self._bucket_size = settings.reconcile_bucket_size

    # -- public -----------------------------------------------------------------
    def run(self, *, sample: float | None = None, restart: bool = False) -> ReconcileReport:
        """Compare, recheck, classify; resumes an unfinished full run unless ``restart``."""
        started = time.monotonic()
        self._check_source_matches_capture()
        state = self._store.current()
        resumable = (
            state is not None
            and state.get("state") in {"scanning", "rechecking"}
            and state.get("mode") == "full"
            and sample is None
            and not restart
        )
        report = ReconcileReport(self._s.migration)
        if resumable:
            assert state is not None
            run_id = str(state["run"])
            report.resumed = True
            log.info("reconcile.resume", run=run_id, phase=state["state"])
        else:
            run_id = uuid.uuid4().hex[:12]
            state = {
                "run": run_id,
                "mode": "sample" if sample else "full",
                "sample": sample,
                "state": "scanning",
                "started_at": dt.datetime.now(dt.UTC),
                "segments": [] if sample else self._plan_segments(),
            }
            self._store.begin(state)
            log.info("reconcile.start", run=run_id, mode=state["mode"], sample=sample)
        report.run_id = run_id
        report.mode = state["mode"]
        report.sample_fraction = sample
        scan = _Scan.from_doc(state)
        if state["state"] == "scanning":
            if sample:
                report.compared = self._sample_pass(run_id, sample, scan)
            else:
                scan, finished = self._scan_segments(run_id, state["segments"])
                report.interrupted = not finished
        if not report.interrupted:
            self._save(run_id, state="rechecking", **scan.to_doc())
            report.resolved_in_flight, report.unresolved_in_flight = self._recheck(run_id)
            self._save(run_id, state="done", finished_at=dt.datetime.now(dt.UTC))
        self._fill(report, run_id, scan)
        report.duration_s = time.monotonic() - started
        report.verdict = decide(
            report,
            max_lag_events=self._s.reconcile_max_lag_events,
            max_lag_seconds=self._s.reconcile_max_lag_seconds,
        )
        if not report.interrupted:
            # Kept with the run, so `status` shows the verdict this run reached (lag
            # included) rather than one rebuilt from its suspects.
            self._save(
                run_id,
                verdict={"ready": report.verdict.ready, "reasons": report.verdict.reasons},
                divergence_ratio=report.divergence_ratio,
            )
        log.info(
            "reconcile.done",
            run=run_id,
            divergent=report.divergent,
            counts=report.counts,
            in_flight_resolved=report.resolved_in_flight,
            ready=report.verdict.ready,
            seconds=round(report.duration_s, 2),
        )
        return report

    def divergent_ids(self, run_id: str, kinds: set[str]) -> Iterator[tuple[str, Any, Any]]:
        """``(kind, _id, target version)`` of every final divergence of ``kinds`` in a run."""
        for doc in self._store.final(run_id):
            if doc["kind"] in kinds:
                yield doc["kind"], doc["doc_id"], doc.get("t_v")

    def converge(self, ids: list[Any], timeout: float) -> list[Any]:
        """Recheck ``ids`` after the pipeline catches up until all match; returns the rest."""
        deadline = time.monotonic() + timeout
        remaining = ids
        while remaining and not self._stop.is_set():
            if self._wait_lag_zero(deadline):
                self._stop.wait(self._s.reconcile_settle_s)
            still: list[Any] = []
            for start in range(0, len(remaining), self._bucket_size):
                chunk = remaining[start : start + self._bucket_size]
                targets = {
                    events.hashable_id(t["_id"]): t
                    for t in self.target.find({"_id": {"$in": chunk}})
                }
                sources = {
                    events.hashable_id(s["_id"]): s
                    for s in self.source.find({"_id": {"$in": chunk}})
                }
                # An untransformable source stays in ``still``: it never converges by waiting.
                still.extend(
                    i
                    for i in chunk
                    if self._classify(
                        sources.get(events.hashable_id(i)), targets.get(events.hashable_id(i))
                    )
                    is not None
                )
            remaining = still
            if time.monotonic() >= deadline:
                break
        return remaining

    def measure_lag(self) -> LagReport:
        """Consumer and capture lag now."""
        return self._lag.measure(self._client, self._s.source)

    # -- the pass ---------------------------------------------------------------
    def _plan_segments(self) -> list[dict[str, Any]]:
        """Cut the _id space into ``reconcile_workers`` ranges of about equal size.

        Boundaries are quantiles of a sample of source ids. Range filters are
        type-bracketed in MongoDB, so the first segment is "not >= the first
        boundary", which also holds every id of another BSON type. Ids of mixed
        types in the sample fall back to one segment.
        """
        workers = self._s.reconcile_workers
        if workers > 1:
            ids = sample_ids(self.source, workers * 64)
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

    def _scan_segments(self, run_id: str, segments: list[dict[str, Any]]) -> tuple[_Scan, bool]:
        """Scan every unfinished segment (in parallel threads); returns totals and completeness."""
        total = self.source.estimated_document_count() + self.target.estimated_document_count()
        scans = [_Scan.from_doc(seg.get("scan", {})) for seg in segments]
        todo = [n for n, seg in enumerate(segments) if not seg.get("done")]
        if len(todo) <= 1:
            finished = all(self._segment_pass(run_id, n, segments[n], scans, total) for n in todo)
        else:
            with ThreadPoolExecutor(len(todo), thread_name_prefix="reconcile") as pool:
                futures = [
                    pool.submit(self._segment_pass, run_id, n, segments[n], scans, total)
                    for n in todo
                ]
                finished = all(f.result() for f in futures)
        return _Scan.total(scans), finished

    def _segment_pass(
        self, run_id: str, n: int, seg: dict[str, Any], scans: list[_Scan], total: int
    ) -> bool:
        """One sorted pass per side over a segment; returns False if stopped (progress saved)."""
        scan = scans[n]
        queries = _segment_queries(seg)
        batch = min(self._bucket_size, 10_000)
        src = read_sorted(self.source, queries, batch=batch)
        tgt = read_stored(self.target, queries, batch=batch)
        bucket: list[_Entry] = []
        paced = _Pacer(self._s.reconcile_max_docs_per_second)
        try:
            for entry in self._merge(src, tgt, scan):
                bucket.append(entry)
                self.max_bucket_entries = max(self.max_bucket_entries, len(bucket))
                if len(bucket) >= self._bucket_size:
                    self._finish_bucket(run_id, n, bucket, scan)
                    paced.wait(len(bucket), self._stop)
                    bucket = []
                    if self._progress is not None:
                        done = sum(s.source_count + s.target_count for s in scans)
                        self._progress(done, total)
                    if self._stop.is_set():
                        log.warning("reconcile.interrupted", run=run_id, reason=self._stop.reason)
                        return False
            if bucket:
                self._finish_bucket(run_id, n, bucket, scan)
        finally:
            src.close()
            tgt.close()
        self._save(run_id, **{f"segments.{n}.done": True})
        if self._progress is not None:
            self._progress(sum(s.source_count + s.target_count for s in scans), total)
        return True

    def _merge(
        self, src: Iterator[dict[str, Any]], tgt: Iterator[StoredDoc], scan: _Scan
    ) -> Iterator[_Entry]:
        for s_doc, t_doc in merge_join(src, tgt):
            if s_doc is None:
                assert t_doc is not None
                yield _Entry(t_doc.doc_id, None, self._actual_hash(t_doc.decode(), scan))
            else:
                yield self._source_entry(s_doc, t_doc, scan)

    def _source_entry(self, doc: dict[str, Any], t_doc: StoredDoc | None, scan: _Scan) -> _Entry:
        scan.source_count += 1
        expected = self._expect(doc)
        if t_doc is not None and agrees_exactly(expected, t_doc):
            # Byte-identical copies: one hash stands for both sides, no canonical encoding.
            assert expected.doc is not None
            scan.target_count += 1
            scan.coverage.update(leaf_paths(expected.doc))
            same = hashlib.blake2b(t_doc.body, digest_size=16).digest()
            return _Entry(doc["_id"], same, same)
        actual = None if t_doc is None else self._actual_hash(t_doc.decode(), scan)
        if expected.rejected is not None:
            scan.untransformable += 1
            return _Entry(doc["_id"], _UNTRANSFORMABLE, actual, expected.rejected)
        if expected.doc is None:
            scan.filtered += 1
            # Filtered out by the spec: no target document is expected.
            return _Entry(doc["_id"], None, actual)
        return _Entry(doc["_id"], doc_hash(expected.doc), actual)

    def _actual_hash(self, doc: dict[str, Any], scan: _Scan) -> bytes:
        scan.target_count += 1
        scan.coverage.update(leaf_paths(doc))
        return doc_hash(doc)

    def _finish_bucket(self, run_id: str, n: int, bucket: list[_Entry], scan: _Scan) -> None:
        scan.buckets += 1
        self._store.add_untransformable(
            run_id, [(e.doc_id, e.rejected) for e in bucket if e.rejected is not None]
        )
        # Both sides' hashes of every id are at hand: compared entry by entry (what
        # comparing two bucket hashes over them would say, without a collision). An
        # untransformable source is in quarantine, not a divergence: it never drills.
        suspects = [e.doc_id for e in bucket if e.expected not in (_UNTRANSFORMABLE, e.actual)]
        if suspects:
            scan.drilled += 1
            self._store.add_pending(run_id, suspects)
        self._save(
            run_id,
            **{
                f"segments.{n}.last_id": bucket[-1].doc_id,
                f"segments.{n}.has_last": True,
                f"segments.{n}.scan": scan.to_doc(),
                "buckets": scan.buckets,  # of this segment: a liveness hint for operators
            },
        )

    def _sample_pass(self, run_id: str, fraction: float, scan: _Scan) -> int:
        """Compare a random ``fraction`` of each side; returns how many ids were examined."""
        src_total = self.source.estimated_document_count()
        tgt_total = self.target.estimated_document_count()
        scan.source_count, scan.target_count = src_total, tgt_total
        src_ids = sample_ids(self.source, min(src_total, max(1, math.ceil(fraction * src_total))))
        tgt_ids = sample_ids(self.target, min(tgt_total, max(1, math.ceil(fraction * tgt_total))))
        coverage: Counter[str] = Counter()
        size = self._bucket_size
        total = len(src_ids) + len(tgt_ids)
        for start in range(0, len(src_ids), size):
            if self._progress is not None:
                self._progress(start, total)
            chunk = src_ids[start : start + size]
            targets = {
                events.hashable_id(t["_id"]): t for t in self.target.find({"_id": {"$in": chunk}})
            }
            suspects = []
            rejected: list[tuple[Any, str]] = []
            for s_doc in self.source.find({"_id": {"$in": chunk}}):
                t_doc = targets.get(events.hashable_id(s_doc["_id"]))
                expected = self._expect(s_doc)
                if expected.rejected is not None:
                    scan.untransformable += 1
                    rejected.append((s_doc["_id"], expected.rejected))
                    continue
                if expected.filtered:
                    scan.filtered += 1
                if classify(expected, t_doc) is not None:
                    suspects.append(s_doc["_id"])
            self._store.add_pending(run_id, suspects)
            self._store.add_untransformable(run_id, rejected)
        for start in range(0, len(tgt_ids), size):
            if self._progress is not None:
                self._progress(len(src_ids) + start, total)
            chunk = tgt_ids[start : start + size]
            for t_doc in self.target.find({"_id": {"$in": chunk}}):
                coverage.update(leaf_paths(t_doc))
            self._orphan_suspects(run_id, chunk)
        if self._progress is not None:
            self._progress(total, total)
        # Coverage counts are scaled to the whole target so shares read the same as a full run.
        scale = tgt_total / max(1, len(tgt_ids))
        scan.coverage = Counter({p: round(n * scale) for p, n in coverage.items()})
        return len(src_ids) + len(tgt_ids)

    def _orphan_suspects(self, run_id: str, ids: list[Any]) -> None:
        present = {
            events.hashable_id(s["_id"])
            for s in self.source.find({"_id": {"$in": ids}}, {"_id": 1})
        }
        self._store.add_pending(run_id, [i for i in ids if events.hashable_id(i) not in present])

    # -- rechecks ---------------------------------------------------------------
    def _recheck(self, run_id: str) -> tuple[int, int]:
        """Recheck pending suspects until each resolves or is final.

        Returns (resolved as in flight, still in flight at the timeout).
        """
        deadline = time.monotonic() + self._s.reconcile_recheck_timeout_s
        resolved = unresolved = 0
        while not self._stop.is_set():
            if self._store.pending_count(run_id) == 0:
                break
            round_start = events.version_of(cluster_time_now(self._client))
            caught_up = self._wait_lag_zero(deadline)
            if caught_up:
                self._stop.wait(self._s.reconcile_settle_s)
            timed_out = time.monotonic() >= deadline
            pending = list(self._store.pending_ids(run_id, self._bucket_size))
            still = 0
            for ids in pending:
                r, s, u = self._recheck_batch(run_id, ids, round_start, caught_up, timed_out)
                resolved += r
                still += s
                unresolved += u
            if still == 0 or timed_out:
                break
            log.info("reconcile.recheck_round", pending=still, caught_up=caught_up)
        return resolved, unresolved

    def _wait_lag_zero(self, deadline: float) -> bool:
        while time.monotonic() < deadline and not self._stop.is_set():
            lag = self._lag.measure(None, None, peek=False)
            # No change topic at all means no pipeline, so nothing can be in flight.
            if (lag.known and lag.events == 0) or lag.topic_missing:
                return True
            self._stop.wait(0.2)
        return False

    def _recheck_batch(
        self, run_id: str, ids: list[Any], round_start: int, caught_up: bool, timed_out: bool
    ) -> tuple[int, int, int]:
        """Re-read ``ids`` on both sides; returns (resolved, still pending, final in flight)."""
        targets = {events.hashable_id(t["_id"]): t for t in self.target.find({"_id": {"$in": ids}})}
        sources = {events.hashable_id(s["_id"]): s for s in self.source.find({"_id": {"$in": ids}})}
        outcomes: dict[Any, Difference | None] = {}
        for doc_id in ids:
            outcomes[events.hashable_id(doc_id)] = self._classify(
                sources.get(events.hashable_id(doc_id)), targets.get(events.hashable_id(doc_id))
            )
        differing = [i for i in ids if outcomes[events.hashable_id(i)] is not None]
        versions = latest_change_versions(self._client, self._s.source, differing) or {}
        resolved = pending = unresolved = 0
        final: list[tuple[Any, dict[str, Any]]] = []
        done: list[Any] = []
        for doc_id in ids:
            key = events.hashable_id(doc_id)
            outcome = outcomes[key]
            if outcome is None:
                resolved += 1
                done.append(doc_id)
                continue
            kind = outcome.kind
            diffs = [{**d.to_json(), "describe": d.describe()} for d in outcome.diffs]
            t_doc = targets.get(key)
            t_v = (t_doc or {}).get(META_FIELD, {}).get("v") if t_doc else None
            s_v = versions.get(key)
            in_flight = not caught_up or (s_v is not None and s_v >= round_start)
            if in_flight and not timed_out:
                pending += 1
                continue
            if in_flight:
                unresolved += 1
            if kind in {"type", "value"} and _newer(s_v, t_v):
                kind = "stale"
            final.append(
                (
                    doc_id,
                    {
                        "state": "final",
                        "kind": kind,
                        "t_v": t_v,
                        "s_v": s_v,
                        "diffs": diffs,
                        "reason": outcome.reason,
                        "in_flight": in_flight,
                    },
                )
            )
        self._store.settle(run_id, done, final)
        return resolved, pending, unresolved

    def _classify(
        self, s_doc: dict[str, Any] | None, t_doc: dict[str, Any] | None
    ) -> Difference | None:
        """None when the two sides agree, else why not (an untransformable source never agrees)."""
        return classify(None if s_doc is None else self._expect(s_doc), t_doc)

    def _expect(self, doc: dict[str, Any]) -> Expectation:
        """What the target should hold (``migrate``: transform + target schema, as the worker)."""
        return expect(self._spec, doc)

    # -- state ------------------------------------------------------------------
    def _save(self, run_id: str, **fields: Any) -> None:
        self._store.save(run_id, **fields)

    def _fill(self, report: ReconcileReport, run_id: str, scan: _Scan) -> None:
        report.source_count = scan.source_count
        report.target_count = scan.target_count
        # Counted from the stored records: those the scan met and those a recheck met
        # (a suspect whose source turned untransformable during the compare).
        report.untransformable = self._store.untransformable_count(run_id)
        report.buckets = scan.buckets
        report.buckets_drilled = scan.drilled
        report.max_bucket_entries = self.max_bucket_entries
        report.filtered = scan.filtered
        schema = getattr(self._spec, "target_schema", None)
        fields = (
            schema_paths(schema.schema, schema.named)
            if schema is not None
            else sorted(scan.coverage)
        )
        report.coverage = {
            p: round(scan.coverage[p] / max(1, scan.target_count), 6) for p in fields
        }
        differing: Counter[str] = Counter()
        limit = self._s.reconcile_sample_ids
        for doc in self._store.final(run_id):
            kind = doc["kind"]
            if kind == UNTRANSFORMABLE:
                rejected = report.samples.setdefault(kind, [])
                if len(rejected) < limit:
                    rejected.append({"_id": doc["doc_id"], "reason": doc.get("reason") or ""})
                continue
            report.counts[kind] += 1
            differing.update({generic_path(d["path"]) for d in doc.get("diffs", [])})
            samples = report.samples.setdefault(kind, [])
            if len(samples) < limit:
                samples.append(
                    {
                        "_id": doc["doc_id"],
                        "target_version": doc.get("t_v"),
                        "source_version": doc.get("s_v"),
                        "diffs": doc.get("diffs", []),
                    }
                )
        report.top_fields = differing.most_common(20)
        report.lag = self.measure_lag()
        if report.mode == "sample":
            report.ci95 = wilson_interval(report.divergent, report.compared)

    def _check_source_matches_capture(self) -> None:
        """Refuse to compare a collection other than the one capture copies."""
        checkpoint = self._client[self._s.metadata_db]["checkpoints"].find_one(
            {"_id": f"{self._s.migration}/capture"}, {"source": 1}
        )
        recorded = (checkpoint or {}).get("source")
        if recorded and recorded != self._s.source:
            raise ConfigError(
                f"migration {self._s.migration!r} captures {recorded} but SM_SOURCE is "
                f"{self._s.source}; set SM_SOURCE={recorded} (or the right --migration)"
            )


def _segment_queries(seg: dict[str, Any]) -> list[dict[str, Any]]:
    """The filters that, run one after the other sorted by ``_id``, cover what is left of ``seg``.

    A fresh segment is one query. A resumed one continues after ``last_id`` with
    ``id_order.after_id_filters`` (``$gt`` stays inside ``last_id``'s BSON type
    bracket, so the later brackets need their own queries), each kept inside the
    segment's bounds.
    """
    if seg["first"] and seg["hi"] is not None:
        # "Not >= the first boundary": also every id of another BSON type (see _plan_segments).
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


def sample_ids(coll: Collection[dict[str, Any]], n: int, attempts: int = 3) -> list[Any]:
    """``n`` random ``_id``s of ``coll``: server-side ``$sample``, else a reservoir sample.

    mongo-java-server implements ``$sample`` as a sort with a random comparator, which
    Java's TimSort sometimes rejects ("Comparison method violates its general
    contract"); it is retried, then replaced by one ``_id``-only pass (O(n) memory).
    """
    if n <= 0:
        return []
    for _ in range(attempts):
        try:
            pipeline = [{"$sample": {"size": n}}, {"$project": {"_id": 1}}]
            return [d["_id"] for d in coll.aggregate(pipeline)]
        except OperationFailure as exc:
            log.warning("sample.retry", collection=coll.full_name, error=str(exc)[:200])
    rng = random.Random()  # noqa: S311 - statistical sampling, not cryptography
    reservoir: list[Any] = []
    for seen, doc in enumerate(coll.find({}, {"_id": 1})):
        if seen < n:
            reservoir.append(doc["_id"])
        else:
            slot = rng.randint(0, seen)
            if slot < n:
                reservoir[slot] = doc["_id"]
    return reservoir


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


def _newer(source_version: int | None, target_version: int | None) -> bool:
    """The source's latest change is newer than the version the target holds.

    A version with increment 0 is a time rounded down to the second (a snapshot
    read time on a server without ``$clusterTime``, see ``mongo.cluster_time_now``):
    it is a lower bound, so a change within that same second is not provably newer.
    """
    if source_version is None:
        return False
    if target_version is None:
        return True
    if target_version & 0xFFFFFFFF == 0 and source_version >> 32 == target_version >> 32:
        return False
    return source_version > target_version
