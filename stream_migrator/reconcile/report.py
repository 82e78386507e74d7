"""The reconcile report, the READY / NOT READY verdict, and their human and JSON forms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bson import json_util

from stream_migrator.reconcile.lag import LagReport

#: Kinds of divergence, in report order. ``stale``, ``type`` and ``value`` are
#: documents present on both sides that differ; ``stale`` = the target holds an
#: older version than the source's latest change after the pipeline caught up.
KINDS = ("missing", "orphan", "stale", "type", "value")


@dataclass(frozen=True)
class Verdict:
    """What the rollout controller's cutover gate reads."""

    ready: bool
    reasons: list[str] = field(default_factory=list)
    divergence_ratio: float = 0.0
    lag_events: int | None = 0  # None: consumer lag unknown (a fence counts it missing)
    lag_seconds: float | None = 0.0


@dataclass
class ReconcileReport:
    migration: str
    mode: str = "full"  # or "sample"
    sample_fraction: float | None = None
    run_id: str = ""
    resumed: bool = False
    interrupted: bool = False
    source_count: int = 0
    target_count: int = 0
    compared: int = 0  # documents (ids) examined this run, both sides
    untransformable: int = 0
    filtered: int = 0  # source documents the spec's filter excludes (not migrated on purpose)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    resolved_in_flight: int = 0
    unresolved_in_flight: int = 0
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    top_fields: list[tuple[str, int]] = field(default_factory=list)
    coverage: dict[str, float] = field(default_factory=dict)
    lag: LagReport = field(default_factory=LagReport)
    ci95: tuple[float, float] | None = None
    buckets: int = 0
    buckets_drilled: int = 0
    max_bucket_entries: int = 0
    duration_s: float = 0.0
    verdict: Verdict = field(default_factory=lambda: Verdict(ready=False))
    repair: dict[str, Any] | None = None

    @property
    def divergent(self) -> int:
        return sum(self.counts.values())

    @property
    def divergence_ratio(self) -> float:
        if self.mode == "sample":
            return self.divergent / max(1, self.compared)
        return self.divergent / max(1, self.source_count + self.counts["orphan"])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "migration": self.migration,
            "mode": self.mode,
            "sample_fraction": self.sample_fraction,
            "run_id": self.run_id,
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "source_count": self.source_count,
            "target_count": self.target_count,
            "compared": self.compared,
            "untransformable": self.untransformable,
            "filtered": self.filtered,
            "divergent": self.divergent,
            "divergence_ratio": self.divergence_ratio,
            "divergence_ci95": list(self.ci95) if self.ci95 else None,
            "counts": dict(self.counts),
            "in_flight": {
                "resolved": self.resolved_in_flight,
                "unresolved_at_timeout": self.unresolved_in_flight,
            },
            "samples": self.samples,
            "top_fields": [{"path": p, "documents": n} for p, n in self.top_fields],
            "field_coverage": self.coverage,
            "lag": self.lag.to_json(),
            "buckets": {
                "total": self.buckets,
                "drilled": self.buckets_drilled,
                "max_entries_held": self.max_bucket_entries,
            },
            "duration_s": round(self.duration_s, 3),
            "verdict": {
                "ready": self.verdict.ready,
                "reasons": self.verdict.reasons,
            },
            "repair": self.repair,
        }
        # Round-trips ObjectId, Decimal128, dates in the samples as extended JSON.
        result: dict[str, Any] = json_util.loads(json_util.dumps(out))
        return result


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (behaves at k=0, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def decide(report: ReconcileReport, *, max_lag_events: int, max_lag_seconds: float) -> Verdict:
    """READY only when nothing diverges, nothing is stuck in quarantine and lag is small."""
    reasons: list[str] = []
    if report.interrupted:
        reasons.append("the compare was interrupted; run it again to resume")
    if report.divergent:
        detail = ", ".join(f"{k} {report.counts[k]}" for k in KINDS if report.counts[k])
        scope = "in the sample" if report.mode == "sample" else "documents"
        reasons.append(f"{report.divergent} divergent {scope} ({detail})")
    if report.unresolved_in_flight:
        reasons.append(
            f"{report.unresolved_in_flight} mismatches were still in flight when the recheck "
            "timeout expired (are the transform workers running? see consumer lag)"
        )
    if report.untransformable:
        named = report.samples.get("untransformable", [])
        listed = "; ".join(f"_id={s['_id']!r}: {s.get('reason', '')}" for s in named[:3])
        more = f" (first {min(3, len(named))}: {listed})" if named else ""
        reasons.append(
            f"{report.untransformable} source documents cannot be transformed (they are in "
            f"quarantine){more}: fix the spec or the data, then "
            "`stream-migrator quarantine replay`"
        )
    lag = report.lag
    if not lag.known:
        reasons.append(f"consumer lag is unknown: {lag.error or 'Kafka gave no answer'}")
    else:
        if lag.events > max_lag_events:
            reasons.append(
                f"{lag.events} events not yet applied (limit {max_lag_events}, "
                "SM_RECONCILE_MAX_LAG_EVENTS)"
            )
        if lag.seconds > max_lag_seconds:
            reasons.append(
                f"oldest unapplied event is {lag.seconds:.1f} s old (limit {max_lag_seconds:g} s, "
                "SM_RECONCILE_MAX_LAG_SECONDS)"
            )
    capture = lag.capture_lag_seconds
    if capture is None:
        # Fail closed: without the source's newest change we cannot tell that capture
        # has seen everything, and an unseen change is an unproven document.
        reasons.append(
            "capture lag is unknown: "
            + (lag.capture_error or "the source's oplog was not read")
            + "; the reconciler reads the source's newest change from local.oplog.rs, so point "
            "SM_MONGO_URI at a replica-set member (not mongos; on a sharded cluster, at each "
            "shard's replica set) as a user with read access on the local database"
        )
    elif capture > max_lag_seconds:
        reasons.append(
            f"capture is {capture:.0f} s behind the source's latest operation (is capture running?)"
        )
    return Verdict(
        ready=not reasons,
        reasons=reasons,
        divergence_ratio=report.divergence_ratio,
        lag_events=lag.events if lag.known else None,
        lag_seconds=lag.seconds if lag.known else None,
    )


def render_text(report: ReconcileReport, *, all_fields: bool = False) -> str:
    """The human report; ``all_fields`` lists every field-coverage path (``reconcile --all``)."""
    lines = [f"== stream-migrator reconcile: {report.migration} =="]
    mode = report.mode
    if report.mode == "sample":
        mode += f" ({(report.sample_fraction or 0) * 100:g}% of each side)"
    if report.resumed:
        mode += ", resumed after an interruption"
    lines.append(f"mode                  {mode}")
    lines.extend(_lag_lines(report.lag))
    lines.append(f"source documents      {report.source_count}")
    lines.append(f"target documents      {report.target_count}")
    if report.mode == "sample":
        lines.append(f"documents sampled     {report.compared}")
    lines.append(f"untransformable       {report.untransformable} (in quarantine)")
    lines.extend(
        f"  _id={s['_id']!r}: {s.get('reason', '')}"
        for s in report.samples.get("untransformable", [])
    )
    if report.filtered:
        lines.append(f"filtered out          {report.filtered} (excluded by the spec's filter)")
    lines.extend(_divergence_lines(report))
    if report.coverage:
        lines.append("field coverage (share of target documents with the field populated)")
        lines.extend(coverage_lines(report.coverage, all_fields=all_fields))
    lines.append(
        f"buckets               {report.buckets} compared, {report.buckets_drilled} drilled "
        f"into, at most {report.max_bucket_entries} entries held"
    )
    if report.repair is not None:
        r = report.repair
        lines.append(
            f"repair                {r['reemitted']} re-emitted through the transform path, "
            f"{r['orphans_deleted']} orphans deleted, {r['still_divergent']} still divergent"
        )
    lines.append(f"time taken            {report.duration_s:.1f} s")
    if report.verdict.ready:
        lines.append("VERDICT               READY for cutover")
    else:
        lines.append("VERDICT               NOT READY")
        lines.extend(f"  - {reason}" for reason in report.verdict.reasons)
    return "\n".join(lines)


#: Field paths deeper than this many field names are folded into one line per ancestor.
COVERAGE_MAX_DEPTH = 4
#: At most this many field-coverage lines; the rest are counted in one summary line.
COVERAGE_MAX_LINES = 50


def coverage_lines(coverage: dict[str, float], *, all_fields: bool = False) -> list[str]:
    """The field-coverage table, summarized unless ``all_fields``.

    The list comes from the target schema, or without one from every populated path
    of every target document, sub-documents included: one 80-deep document gave
    80 lines. Paths deeper than :data:`COVERAGE_MAX_DEPTH` field names fold into
    their ancestor (``a.b.c.d.*``, with how many and their share range); past
    :data:`COVERAGE_MAX_LINES` lines, the least-populated fields are kept (they are
    the ones to look at) and the rest are counted. The JSON report always has all.
    """
    rows = sorted(coverage.items())
    if all_fields:
        return [f"  {path:30} {share * 100:6.2f}%" for path, share in rows]
    folded: dict[str, list[float]] = {}
    shown: list[tuple[str, float, str]] = []  # (path, lowest share, text)
    for path, share in rows:
        parts = path.split(".")
        names = [n for n, part in enumerate(parts) if part != "[]"]
        if len(names) <= COVERAGE_MAX_DEPTH:
            shown.append((path, share, f"  {path:30} {share * 100:6.2f}%"))
        else:
            ancestor = ".".join(parts[: names[COVERAGE_MAX_DEPTH - 1] + 1])
            folded.setdefault(ancestor + ".*", []).append(share)
    for group, shares in folded.items():
        low, high = min(shares), max(shares)
        span = f"{low * 100:6.2f}%" + (f"-{high * 100:.2f}%" if high != low else "")
        shown.append((group, low, f"  {group:30} {span}  ({len(shares)} deeper fields)"))
    hidden: list[float] = []
    if len(shown) > COVERAGE_MAX_LINES:
        by_share = sorted(shown, key=lambda row: (row[1], row[0]))
        kept = {row[0] for row in by_share[:COVERAGE_MAX_LINES]}
        hidden = [row[1] for row in by_share[COVERAGE_MAX_LINES:]]
        shown = [row for row in shown if row[0] in kept]
    lines = [text for _, _, text in sorted(shown)]
    if hidden:
        below = [share for share in hidden if share < 1]
        what = (
            f"{len(below)} below 100%, lowest {min(below) * 100:.2f}%" if below else "all 100.00%"
        )
        lines.append(f"  ... {len(hidden)} more fields ({what})")
    if hidden or folded:
        lines.append("  (summarized: `stream-migrator reconcile --all` lists every field)")
    return lines


def _lag_lines(lag: LagReport) -> list[str]:
    if not lag.known:
        lines = [f"consumer lag          unknown ({lag.error})"]
    else:
        lines = [f"consumer lag          {lag.events} events, {lag.seconds:.1f} s behind"]
        lines.extend(
            f"  partition {p.partition:<3}       {p.events} events (produced {p.produced}, "
            f"committed {p.committed}, {p.seconds(lag.measured_at):.1f} s)"
            for p in lag.partitions
            if p.events
        )
    capture = lag.capture_lag_seconds
    lines.append(
        "capture lag           "
        + (
            f"unknown ({lag.capture_error or 'not measured'})"
            if capture is None
            else f"{capture:.0f} s"
        )
    )
    return lines


def _divergence_lines(report: ReconcileReport) -> list[str]:
    ratio = f"{report.divergence_ratio * 100:.4f}%"
    if report.ci95 is not None:
        ratio += f" (95% CI {report.ci95[0] * 100:.4f}% - {report.ci95[1] * 100:.4f}%)"
    lines = [f"divergent documents   {report.divergent} = {ratio}"]
    lines.extend(f"  {kind:19} {report.counts[kind]}" for kind in KINDS)
    lines.append(
        f"in flight             {report.resolved_in_flight} mismatches resolved on recheck, "
        f"{report.unresolved_in_flight} still changing at the timeout"
    )
    for kind in KINDS:
        for sample in report.samples.get(kind, []):
            lines.append(f"  {kind} _id={sample['_id']!r}")
            lines.extend(f"      {d['describe']}" for d in sample.get("diffs", [])[:5])
    if report.top_fields:
        lines.append("top differing fields")
        lines.extend(f"  {path:30} {n}" for path, n in report.top_fields[:10])
    return lines
