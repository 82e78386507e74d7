"""The bucketed, resumable, recheck-aware compare of transform(source) against target.

:class:`Reconciler` runs one compare and builds its report; each step is its own
module:

- ``scan.py``: the full pass, the ``_id`` space cut into segments scanned in
  parallel, each one sorted pass per side merge-joined by ``_id``;
- ``buckets.py``: those passes cut into buckets of N ids holding only hashes, so
  memory is O(bucket); a bucket's differing ids become *suspects*, stored in the
  metadata database (``reconcile_suspects``) with the run's progress
  (``reconcile_runs``): a killed compare resumes after the last finished bucket;
- ``sampling.py``: the sampled pass instead of the scan;
- ``recheck.py``: suspects re-read once the pipeline has caught up, each settled
  as in flight or as a classified divergence.

A source document the spec rejects is never "agreeing": found by the scan or by
a recheck, it is stored as a final ``untransformable`` suspect with the spec's
reason, so the report names it and the verdict stays NOT READY until it is fixed
and replayed. What "agrees" means is ``compare.classify``, shared with
``full_compare``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection

from stream_migrator.errors import ConfigError
from stream_migrator.mongo import on_primary
from stream_migrator.observability import get_logger
from stream_migrator.reconcile.canonical import generic_path, schema_paths
from stream_migrator.reconcile.counts import ScanCounts
from stream_migrator.reconcile.lag import LagProbe, LagReport
from stream_migrator.reconcile.recheck import converge, recheck
from stream_migrator.reconcile.report import ReconcileReport, decide, wilson_interval
from stream_migrator.reconcile.runs import UNTRANSFORMABLE, RunStore
from stream_migrator.reconcile.sampling import sample_pass
from stream_migrator.reconcile.scan import FullScan, plan_segments
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.reconcile.sides import ProgressFn, Sides
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import MigrationSpec, get_spec

log = get_logger("reconcile")


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
        self._spec = spec or get_spec(settings.spec, settings.hook_policy)
        sdb, scoll = settings.split_ns(settings.source)
        tdb, tcoll = settings.split_ns(settings.target)
        # Scans and rechecks read the primary, majority-committed (see full_compare).
        self.source: Collection[dict[str, Any]] = on_primary(client[sdb][scoll])
        self.target: Collection[dict[str, Any]] = on_primary(client[tdb][tcoll])
        self._store = RunStore(client, settings.metadata_db, settings.migration)
        self._sides = Sides(
            settings=settings,
            client=client,
            source=self.source,
            target=self.target,
            store=self._store,
            spec=self._spec,
            lag=lag_probe,
            stop=stop or StopFlag(),
            progress=progress,
        )
        #: Most (id, hash, hash) entries one bucket ever held: the memory bound, for tests.
        self.max_bucket_entries = 0

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
                "segments": [] if sample else plan_segments(self._sides),
            }
            self._store.begin(state)
            log.info("reconcile.start", run=run_id, mode=state["mode"], sample=sample)
        report.run_id = run_id
        report.mode = state["mode"]
        report.sample_fraction = sample
        scan = ScanCounts.from_doc(state)
        if state["state"] == "scanning":
            if sample:
                report.compared = sample_pass(self._sides, run_id, sample, scan)
            else:
                full = FullScan(self._sides, run_id)
                scan, finished = full.run(state["segments"])
                self.max_bucket_entries = max(self.max_bucket_entries, full.max_bucket_entries)
                report.interrupted = not finished
        if not report.interrupted:
            self._store.save(run_id, state="rechecking", **scan.to_doc())
            report.resolved_in_flight, report.unresolved_in_flight = recheck(self._sides, run_id)
            self._store.save(run_id, state="done", finished_at=dt.datetime.now(dt.UTC))
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
            self._store.save(
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
        return converge(self._sides, ids, timeout)

    def measure_lag(self) -> LagReport:
        """Consumer and capture lag now."""
        return self._lag.measure(self._client, self._s.source)

    # -- the report -------------------------------------------------------------
    def _fill(self, report: ReconcileReport, run_id: str, scan: ScanCounts) -> None:
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
