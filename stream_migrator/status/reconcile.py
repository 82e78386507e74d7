"""The reconcile section: the last run's verdict and age, from the reconcile run store."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

from stream_migrator.reconcile.report import KINDS, ReconcileReport
from stream_migrator.reconcile.runs import RUNS, SUSPECTS, UNTRANSFORMABLE
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.status.times import epoch, iso


def last_reconcile(
    client: MongoClient[dict[str, Any]], settings: ReconcileSettings, now: float
) -> dict[str, Any]:
    """The last reconcile run of the migration, from ``<metadata_db>.reconcile_runs``.

    The run store keeps the run's state, mode, counts and times, and its final
    suspects (one per divergent document); it keeps no verdict. Unless a run document
    carries one (``verdict: {ready, reasons}``, ``divergence_ratio``), the verdict is
    derived from the stored findings: divergent and untransformable documents and
    mismatches still in flight at the recheck timeout. The lag the run saw is not
    stored; the transform section shows lag now.
    """
    meta = client[settings.metadata_db]
    run = meta[RUNS].find_one({"_id": f"{settings.migration}/reconcile"})
    if run is None:
        return {"available": True, "error": None, "found": False}
    run_id = run.get("run")
    finished = epoch(run.get("finished_at"))
    out: dict[str, Any] = {
        "available": True,
        "error": None,
        "found": True,
        "run_id": run_id,
        "mode": run.get("mode"),
        "state": run.get("state"),
        "started_at": iso(epoch(run.get("started_at"))),
        "finished_at": iso(finished),
        "age_s": None if finished is None else round(max(0.0, now - finished), 1),
        "source_count": run.get("source_count"),
        "target_count": run.get("target_count"),
        "verdict": None,
        "ready": None,
        "reasons": [],
        "verdict_source": None,
        "divergent": None,
        "divergence_ratio": None,
    }
    if run.get("state") != "done":
        return out
    counts = dict.fromkeys(KINDS, 0)
    untransformable = 0
    for row in meta[SUSPECTS].aggregate(
        [
            {"$match": {"run": run_id, "state": "final"}},
            {"$group": {"_id": "$kind", "n": {"$sum": 1}}},
        ]
    ):
        if row["_id"] == UNTRANSFORMABLE:
            untransformable = int(row["n"])
        elif row["_id"] in counts:
            counts[row["_id"]] = int(row["n"])
    pending = meta[SUSPECTS].count_documents({"run": run_id, "state": "pending"})
    report = ReconcileReport(
        settings.migration,
        mode=str(run.get("mode") or "full"),
        source_count=int(run.get("source_count") or 0),
        counts=counts,
        untransformable=untransformable,
        unresolved_in_flight=pending,
    )
    out["divergent"] = report.divergent
    out["untransformable"] = untransformable
    out["counts"] = counts
    stored = run.get("verdict")
    if isinstance(stored, dict) and "ready" in stored:
        out["ready"] = bool(stored["ready"])
        out["reasons"] = [str(r) for r in stored.get("reasons") or []]
        out["verdict_source"] = "stored"
        ratio = run.get("divergence_ratio")
        out["divergence_ratio"] = None if ratio is None else float(ratio)
    else:
        reasons = []
        if report.divergent:
            detail = ", ".join(f"{k} {counts[k]}" for k in KINDS if counts[k])
            reasons.append(f"{report.divergent} divergent documents ({detail})")
        if untransformable:
            reasons.append(f"{untransformable} source documents cannot be transformed")
        if pending:
            reasons.append(f"{pending} mismatches were still in flight at the recheck timeout")
        out["ready"] = not reasons
        out["reasons"] = reasons
        out["verdict_source"] = "derived from the run store (lag at run time not stored)"
        # A sampled run's ratio is over the documents it compared, which is not stored.
        out["divergence_ratio"] = None if report.mode == "sample" else report.divergence_ratio
    out["verdict"] = "READY" if out["ready"] else "NOT READY"
    return out
