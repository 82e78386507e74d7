"""Repair: re-emit divergent documents through the transform path, then recheck them.

The reconciler never writes the target. It produces synthetic change events to
the change topic (``op="snapshot"`` with the current source document, or
``op="delete"`` for an orphan when ``--delete-orphans`` is given); the running
transform workers apply them with the normal version guard, so a repair can
never overwrite a newer change that raced with it.
"""

from __future__ import annotations

import time
from typing import Any

from stream_migrator import events
from stream_migrator.kafka import AckedProducer
from stream_migrator.mongo import cluster_time_now
from stream_migrator.observability import get_logger
from stream_migrator.reconcile.engine import Reconciler
from stream_migrator.reconcile.report import KINDS, ReconcileReport, decide
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.reconcile.sides import ProgressFn

log = get_logger("reconcile.repair")
_REEMIT = {"missing", "stale", "type", "value"}


def repair(
    settings: ReconcileSettings,
    reconciler: Reconciler,
    producer: AckedProducer,
    report: ReconcileReport,
    *,
    delete_orphans: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Re-emit the run's divergent ids, wait for the workers, recheck; updates ``report``.

    ``progress(done, total)``: divergent ids handled (re-emitted, or skipped because
    the source changed since the compare) of all to repair, after each acknowledged
    chunk.
    """
    kinds = _REEMIT | ({"orphan"} if delete_orphans else set())
    todo = list(reconciler.divergent_ids(report.run_id, kinds))
    reemitted = deleted = 0
    size = settings.reconcile_bucket_size
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        # Why a fresh cluster time read *before* the source read: any change made
        # after it has a higher version and still wins over this repair event.
        now = events.version_of(cluster_time_now(reconciler.source.database.client))
        sources = {
            events.hashable_id(d["_id"]): d
            for d in reconciler.source.find({"_id": {"$in": [c[1] for c in chunk]}})
        }
        for kind, doc_id, t_v in chunk:
            # Above the target's version too: on a server whose clock only has whole
            # seconds, "now" can equal a version written earlier in the same second.
            version = max(now, int(t_v or 0) + 1)
            doc = sources.get(events.hashable_id(doc_id))
            if doc is not None and kind != "orphan":
                event = _event("snapshot", settings.source, doc_id, doc, version)
                reemitted += 1
            elif doc is None and kind == "orphan":
                event = _event("delete", settings.source, doc_id, None, version)
                deleted += 1
            else:
                continue  # the source changed since the compare; the recheck will tell
            producer.produce(settings.changes_topic, event.key, events.encode(event))
        producer.barrier()
        if progress is not None:
            progress(start + len(chunk), len(todo))
    log.info("repair.emitted", reemitted=reemitted, orphans_deleted=deleted)
    remaining = reconciler.converge(
        [doc_id for _, doc_id, _ in todo], settings.reconcile_recheck_timeout_s
    )
    left = {events.hashable_id(i) for i in remaining}
    still: dict[str, int] = dict.fromkeys(KINDS, 0)
    for kind, doc_id, _ in todo:
        if events.hashable_id(doc_id) in left:
            still[kind] += 1
    for kind in kinds:
        report.counts[kind] = still[kind]
        report.samples[kind] = [
            s for s in report.samples.get(kind, []) if events.hashable_id(s["_id"]) in left
        ]
    report.lag = reconciler.measure_lag()
    outcome = {
        "reemitted": reemitted,
        "orphans_deleted": deleted,
        "orphans_reported": report.counts["orphan"],
        "still_divergent": len(remaining),
    }
    report.repair = outcome
    report.verdict = decide(
        report,
        max_lag_events=settings.reconcile_max_lag_events,
        max_lag_seconds=settings.reconcile_max_lag_seconds,
    )
    return outcome


def _event(
    op: events.Op, ns: str, doc_id: Any, doc: dict[str, Any] | None, version: int
) -> events.ChangeEvent:
    return events.ChangeEvent(
        op=op,
        ns=ns,
        doc_id=doc_id,
        document=doc,
        cluster_time=version,
        captured_at_ms=int(time.time() * 1000),
    )
