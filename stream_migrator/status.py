"""Where a migration stands: one read-only document of every stage, and whether it can cut over.

``stream-migrator status`` prints it (``--json`` as is); a later ``/progress``
endpoint serves the same document. Every figure is read from the store that
owns it - capture's checkpoint, the change topic's positions (through
:class:`~stream_migrator.reconcile.lag.LagProbe`, the one lag source), the
quarantine topic, the reconcile run store and the rollout state - and nothing is
written anywhere.

Why each section carries ``available`` and ``error`` instead of raising: the view
is most wanted when something is down. A broker that does not answer leaves the
capture section readable and says so in the transform and quarantine sections;
``can_cutover`` is then false with the reason (unknown is never "fine").

Rates (snapshot copy rate, drain rate) need two readings: a
:class:`StatusReader` keeps its previous one, and the first reading of a reader
takes the Kafka positions twice, ``first_interval_s`` apart.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pymongo import DESCENDING, MongoClient
from pymongo.errors import PyMongoError

from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.kafka import group_members
from stream_migrator.mongo import connect
from stream_migrator.reconcile.lag import LagProbe, LagReport
from stream_migrator.reconcile.report import KINDS, ReconcileReport
from stream_migrator.reconcile.runs import RUNS, SUSPECTS, UNTRANSFORMABLE
from stream_migrator.reconcile.settings import ReconcileSettings, load_reconcile_settings
from stream_migrator.rollout.audit import AUDIT_COLLECTION
from stream_migrator.rollout.stages import Stage
from stream_migrator.rollout.state import StateStore
from stream_migrator.settings import Settings
from stream_migrator.transform.quarantine import read_quarantine

#: A reconcile that finished longer ago than this does not prove the target now.
DEFAULT_MAX_RECONCILE_AGE_S = 3600.0
#: Seconds between the two readings a fresh reader takes for its first rates.
DEFAULT_FIRST_INTERVAL_S = 1.0
_KAFKA_TIMEOUT_S = 5.0
_MONGO_TIMEOUT_MS = 3_000


@dataclass(frozen=True)
class _Positions:
    """Sums over the change topic's partitions at one moment (for rates)."""

    at: float
    produced: int
    committed: int
    lag: int


def _positions(report: LagReport) -> _Positions | None:
    if not report.known:
        return None
    return _Positions(
        at=report.measured_at,
        produced=sum(p.produced for p in report.partitions),
        committed=sum(p.committed for p in report.partitions),
        lag=report.events,
    )


class StatusReader:
    """Reads :func:`progress_document` figures again and again (``status --watch``, /progress).

    Holds one MongoDB client and one lag probe, and the previous reading, from which
    the copy and drain rates come.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_reconcile_age_s: float = DEFAULT_MAX_RECONCILE_AGE_S,
        first_interval_s: float = DEFAULT_FIRST_INTERVAL_S,
        kafka_timeout_s: float = _KAFKA_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings: ReconcileSettings = (
            settings
            if isinstance(settings, ReconcileSettings)
            else load_reconcile_settings(settings)
        )
        self.max_reconcile_age_s = max_reconcile_age_s
        self._first_interval_s = first_interval_s
        self._timeout = kafka_timeout_s
        self._clock = clock
        self._sleep = sleep
        s = self.settings
        # A TLS or login misconfiguration raises ConfigError here (exit 2); a server
        # that is only down is reported per section.
        self._client: MongoClient[dict[str, Any]] = connect(
            s.mongo_uri.get_secret_value(), app="status", timeout_ms=_MONGO_TIMEOUT_MS
        )
        self._probe: LagProbe | None = None
        self._previous: _Positions | None = None

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self._client.close()

    # -- the document ------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """One reading of every section, plus ``can_cutover`` and its reasons."""
        s = self.settings
        mongo_error = _ping(self._client)
        lag = self._measure_lag(mongo_up=mongo_error is None)
        kafka_error = None if lag.known or lag.topic_missing else lag.error
        now = self._clock()
        rates = _Rates.between(self._previous, _positions(lag))
        if rates.current is not None:
            self._previous = rates.current

        capture = _guarded(mongo_error, lambda: self._capture(lag, rates, now))
        transform = _guarded(kafka_error, lambda: self._transform(lag, rates))
        quarantine = _guarded(kafka_error, self._quarantine)
        reconcile = _guarded(mongo_error, lambda: self._reconcile(now))
        rollout = _guarded(mongo_error, self._rollout)
        doc: dict[str, Any] = {
            "migration": s.migration,
            "source": s.source,
            "target": s.target,
            "measured_at": _iso(now),
            "capture": capture,
            "transform": transform,
            "quarantine": quarantine,
            "reconcile": reconcile,
            "rollout": rollout,
        }
        reasons = cutover_blockers(doc, s, self.max_reconcile_age_s)
        doc["can_cutover"] = not reasons
        doc["cutover_blockers"] = reasons
        return doc

    def _measure_lag(self, *, mongo_up: bool) -> LagReport:
        s = self.settings
        if self._probe is None:
            self._probe = LagProbe(
                s.kafka_bootstrap,
                s.consumer_group,
                s.changes_topic,
                s.kafka_client,
                client_id="sm-status",
            )
        client = self._client if mongo_up else None
        if self._previous is None and self._first_interval_s > 0:
            # The first reading: positions now and again shortly, so rates exist at once.
            first = self._probe.measure(None, None, timeout=self._timeout, peek=False)
            if first.known:
                self._previous = _positions(first)
                self._sleep(self._first_interval_s)
        return self._probe.measure(client, s.source if mongo_up else None, timeout=self._timeout)

    # -- sections ----------------------------------------------------------------
    def _capture(self, lag: LagReport, rates: _Rates, now: float) -> dict[str, Any]:
        s = self.settings
        store = MongoCheckpointStore(self._client, s.metadata_db, s.migration)
        checkpoint = store.load()
        out: dict[str, Any] = {"available": True, "error": None}
        if checkpoint is None:
            out.update(
                phase="not_started",
                note=f"no checkpoint in {s.metadata_db}.checkpoints yet (has capture started?)",
            )
            return out
        stopped = checkpoint.get("stopped")
        snapshot = checkpoint.get("snapshot")
        snapshot = snapshot if isinstance(snapshot, dict) else {}
        done = bool(snapshot.get("done"))
        if stopped:
            out["phase"] = "stopped"
        else:
            out["phase"] = "streaming" if done else "snapshot"
        out["snapshot"] = self._snapshot(snapshot, done, lag, rates)
        saved_at = checkpoint.get("updated_at")
        token_time = resume_token_time(checkpoint.get("resume_token"))
        basis, since = (
            ("resume token cluster time", token_time)
            if token_time is not None
            else ("last checkpoint save", _epoch(saved_at))
        )
        out["streaming"] = {
            "resume_token_age_s": None if since is None else round(max(0.0, now - since), 1),
            "resume_token_age_basis": basis,
            "last_checkpoint_at": _iso(_epoch(saved_at)),
            "capture_lag_s": lag.capture_lag_seconds,
            "capture_lag_error": None if lag.capture_measured else lag.capture_error,
        }
        out["stopped"] = (
            {
                "reason": str(stopped.get("reason")),
                "at": str(stopped.get("at")),
            }
            if isinstance(stopped, dict)
            else None
        )
        return out

    def _snapshot(
        self, snapshot: dict[str, Any], done: bool, lag: LagReport, rates: _Rates
    ) -> dict[str, Any]:
        s = self.settings
        sdb, scoll = s.split_ns(s.source)
        total = self._client[sdb][scoll].estimated_document_count()
        ranges = snapshot.get("ranges")
        ranges = ranges if isinstance(ranges, list) else []
        out: dict[str, Any] = {
            "done": done,
            "estimated_total": total,
            # The change topic's produced events: snapshot documents plus changes
            # captured meanwhile, so the share is approximate (and capped at 100%).
            "copied": None,
            "copied_basis": "change topic high watermarks (approximate)",
            "percent": 100.0 if done else None,
            "rate_per_s": None,
            "eta_s": 0.0 if done else None,
            "ranges": len(ranges) or None,
            "ranges_done": sum(1 for r in ranges if isinstance(r, dict) and r.get("done"))
            if ranges
            else None,
        }
        if rates.current is not None:
            out["copied"] = rates.current.produced
        if done:
            return out
        copied = out["copied"]
        if copied is not None and total > 0:
            out["percent"] = round(min(100.0, 100.0 * copied / total), 1)
        if rates.produced_per_s is not None:
            out["rate_per_s"] = round(rates.produced_per_s, 1)
            if copied is not None and rates.produced_per_s > 0:
                out["eta_s"] = round(max(0, total - copied) / rates.produced_per_s, 1)
        return out

    def _transform(self, lag: LagReport, rates: _Rates) -> dict[str, Any]:
        s = self.settings
        figures = lag.to_json()
        out: dict[str, Any] = {
            "available": lag.known,
            "error": lag.error,
            "group": s.consumer_group,
            "topic": s.changes_topic,
            "lag_events": figures["events"] if lag.known else None,
            "lag_seconds": figures["seconds"] if lag.known else None,
            "partitions": [
                {
                    "partition": p["partition"],
                    "produced": p["produced"],
                    "committed": p["committed"],
                    "lag_events": p["events"],
                    "lag_seconds": p["seconds"],
                }
                for p in figures["partitions"]
            ],
            "applied_per_s": _round(rates.committed_per_s),
            "drain_per_s": _round(rates.drain_per_s),
            "drain_eta_s": None,
            "members": group_members(
                s.kafka_bootstrap, s.consumer_group, self._timeout, security=s.kafka_client
            ),
        }
        if lag.known:
            if lag.events == 0:
                out["drain_eta_s"] = 0.0
            elif rates.drain_per_s is not None and rates.drain_per_s > 0:
                out["drain_eta_s"] = round(lag.events / rates.drain_per_s, 1)
        return out

    def _quarantine(self) -> dict[str, Any]:
        s = self.settings
        events = read_quarantine(
            s.kafka_bootstrap, s.quarantine_topic, timeout=self._timeout, security=s.kafka_client
        )
        by_stage = Counter(e.stage for e in events)
        newest = None
        if events:
            # The quarantine topic has one partition: the highest offset is the newest.
            e = max(events, key=lambda q: (q.offset, q.partition))
            newest = {
                "position": e.position,
                "stage": e.stage,
                "reason": e.reason,
                "doc_id": None if e.doc_id() is None else str(e.doc_id()),
            }
        return {
            "available": True,
            "error": None,
            "topic": s.quarantine_topic,
            "count": len(events),
            "by_stage": dict(sorted(by_stage.items())),
            "newest": newest,
        }

    def _reconcile(self, now: float) -> dict[str, Any]:
        return last_reconcile(self._client, self.settings, now)

    def _rollout(self) -> dict[str, Any]:
        s = self.settings
        state = StateStore(self._client, s.metadata_db).load(s.migration)
        if state is None:
            return {"available": True, "error": None, "found": False}
        return {
            "available": True,
            "error": None,
            "found": True,
            "stage": str(state.stage),
            "tier": state.tier,
            "percentage": state.percentage,
            "halted": state.halted,
            "halt_reason": state.halt_reason,
            "hold_reason": state.hold_reason,
            "read_path": state.read_path,
            "updated_at": _iso(_epoch(state.updated_at)),
            "version": state.version,
            "fences": fence_states(self._client, s.metadata_db, s.migration, state.halted),
        }


def progress_document(
    settings: Settings,
    *,
    reader: StatusReader | None = None,
    max_reconcile_age_s: float = DEFAULT_MAX_RECONCILE_AGE_S,
    first_interval_s: float = DEFAULT_FIRST_INTERVAL_S,
) -> dict[str, Any]:
    """The status document of the configured migration (``status --json``, ``/progress``).

    With ``reader`` its previous reading gives the rates; without, a reader is made
    for this one document (its positions are read twice, ``first_interval_s`` apart).

    Keys: ``migration``, ``source``, ``target``, ``measured_at`` (ISO-8601 UTC);
    ``capture`` (``phase`` not_started | snapshot | streaming | stopped; ``snapshot``
    done, copied of estimated_total, percent, rate_per_s, eta_s; ``streaming``
    resume_token_age_s, capture_lag_s; ``stopped`` reason); ``transform`` (lag_events,
    lag_seconds, partitions, applied_per_s, drain_eta_s, members); ``quarantine``
    (count, by_stage, newest); ``reconcile`` (verdict, divergence_ratio, finished_at,
    age_s); ``rollout`` (stage, tier, percentage, halted, fences); ``can_cutover`` and
    ``cutover_blockers``. Every section has ``available`` and ``error``; a figure that
    could not be measured is null.
    """
    if reader is not None:
        return reader.read()
    with StatusReader(
        settings, max_reconcile_age_s=max_reconcile_age_s, first_interval_s=first_interval_s
    ) as fresh:
        return fresh.read()


# -- can_cutover ------------------------------------------------------------------
def cutover_blockers(
    doc: dict[str, Any], settings: ReconcileSettings, max_reconcile_age_s: float
) -> list[str]:
    """Why the migration cannot cut over now (empty: it can), like mongosync's canCommit.

    Fails closed: a section that could not be read is a reason of its own.
    """
    return [
        *_capture_blockers(doc["capture"], settings),
        *_transform_blockers(doc["transform"], settings),
        *_quarantine_blockers(doc["quarantine"]),
        *_reconcile_blockers(doc["reconcile"], max_reconcile_age_s),
        *_rollout_blockers(doc["rollout"]),
    ]


def _capture_blockers(capture: dict[str, Any], settings: ReconcileSettings) -> list[str]:
    if not capture["available"]:
        return [f"capture state unknown: {capture['error']}"]
    if capture["phase"] == "not_started":
        return ["capture has not started (no checkpoint)"]
    reasons = []
    if capture["phase"] == "stopped":
        stopped = capture.get("stopped") or {}
        reasons.append(
            f"capture stopped at a '{stopped.get('reason')}' event ({stopped.get('at')})"
        )
    snapshot = capture["snapshot"]
    if not snapshot["done"]:
        share = snapshot.get("percent")
        reasons.append(
            "snapshot not done"
            + (f" ({share:g}% copied, approximate)" if share is not None else "")
        )
    streaming = capture["streaming"]
    lag_s = streaming["capture_lag_s"]
    if lag_s is None:
        why = streaming["capture_lag_error"] or "the source's oplog was not read"
        reasons.append(f"capture lag unknown: {why}")
    elif lag_s > settings.reconcile_max_lag_seconds:
        reasons.append(
            f"capture is {lag_s:.0f} s behind the source (limit "
            f"{settings.reconcile_max_lag_seconds:g} s, SM_RECONCILE_MAX_LAG_SECONDS)"
        )
    return reasons


def _transform_blockers(transform: dict[str, Any], settings: ReconcileSettings) -> list[str]:
    if not transform["available"]:
        return [f"transform lag unknown: {transform['error']}"]
    reasons = []
    if transform["lag_events"] > settings.reconcile_max_lag_events:
        reasons.append(
            f"{transform['lag_events']} events not yet applied (limit "
            f"{settings.reconcile_max_lag_events}, SM_RECONCILE_MAX_LAG_EVENTS)"
        )
    if transform["lag_seconds"] > settings.reconcile_max_lag_seconds:
        reasons.append(
            f"oldest unapplied event is {transform['lag_seconds']:.1f} s old (limit "
            f"{settings.reconcile_max_lag_seconds:g} s, SM_RECONCILE_MAX_LAG_SECONDS)"
        )
    return reasons


def _quarantine_blockers(quarantine: dict[str, Any]) -> list[str]:
    if not quarantine["available"]:
        return [f"quarantine unknown: {quarantine['error']}"]
    if not quarantine["count"]:
        return []
    stages = ", ".join(f"{k} {n}" for k, n in quarantine["by_stage"].items())
    newest = quarantine["newest"] or {}
    return [
        f"{_count(quarantine['count'], 'event')} in quarantine ({stages}; newest: "
        f"{newest.get('reason', '')}): fix them, then `stream-migrator quarantine replay`"
    ]


def _rollout_blockers(rollout: dict[str, Any]) -> list[str]:
    if not rollout["available"]:
        return [f"rollout state unknown: {rollout['error']}"]
    if not rollout.get("found"):
        return []  # no rollout staged: nothing of it holds the cutover back
    reasons = []
    if rollout["halted"]:
        reasons.append(f"rollout halted: {rollout['halt_reason']}")
    if rollout["stage"] in {Stage.ROLLING_BACK, Stage.ROLLED_BACK}:
        reasons.append(f"rollout is {rollout['stage']}")
    return reasons


def _reconcile_blockers(rec: dict[str, Any], max_age_s: float) -> list[str]:
    if not rec["available"]:
        return [f"last reconcile unknown: {rec['error']}"]
    if not rec.get("found"):
        return ["no reconcile has run (`stream-migrator reconcile`)"]
    if rec["state"] != "done":
        return [f"the last reconcile has not finished (state {rec['state']}); run it again"]
    out: list[str] = []
    if not rec["ready"]:
        out.append("last reconcile NOT READY: " + "; ".join(rec["reasons"]))
    age = rec.get("age_s")
    if age is None or age > max_age_s:
        out.append(
            f"last reconcile is too old ({age if age is None else f'{age:.0f}'} s, limit "
            f"{max_age_s:g} s, --max-reconcile-age): run `stream-migrator reconcile`"
        )
    return out


# -- read helpers (each belongs to its store's module; see the issue note) ---------
def resume_token_time(token: Any) -> float | None:
    """The cluster time (epoch seconds) a MongoDB resume token encodes; None if unreadable.

    A token's ``_data`` is a hex KeyString whose first value is the event's cluster
    time: type byte 0x82 (Timestamp), then 4 bytes of seconds, 4 of increment. A
    token of another shape (another server, a future format) gives None.
    """
    data = token.get("_data") if isinstance(token, dict) else None
    if not isinstance(data, str) or len(data) < 18 or data[:2].lower() != "82":
        return None
    try:
        seconds = int(data[2:10], 16)
    except ValueError:
        return None
    # A plausible time only (2000-01-01 ..): anything else is not a timestamp.
    return float(seconds) if seconds >= 946_684_800 else None


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
    finished = _epoch(run.get("finished_at"))
    out: dict[str, Any] = {
        "available": True,
        "error": None,
        "found": True,
        "run_id": run_id,
        "mode": run.get("mode"),
        "state": run.get("state"),
        "started_at": _iso(_epoch(run.get("started_at"))),
        "finished_at": _iso(finished),
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


def fence_states(
    client: MongoClient[dict[str, Any]], metadata_db: str, migration: str, halted: bool
) -> dict[str, Any]:
    """The fences as the audit trail last recorded them: measured values and breaches.

    The controller keeps no fence state beside the rollout document; each evaluation
    it acts on is audited with ``details.measured``, and a breach with
    ``details.breaches`` (the limits live in the plan file).
    """
    audit = client[metadata_db][AUDIT_COLLECTION]
    order = [("at", DESCENDING), ("seq", DESCENDING)]
    measured = audit.find_one(
        {"migration": migration, "details.measured": {"$exists": True}}, sort=order
    )
    breach = audit.find_one({"migration": migration, "action": "fence_breach"}, sort=order)
    details = (measured or {}).get("details") or {}
    return {
        "evaluated_at": _iso(_epoch((measured or {}).get("at"))),
        "measured": details.get("measured"),
        "unmeasured": details.get("unmeasured") or [],
        "breaches": ((breach or {}).get("details") or {}).get("breaches") or [] if halted else [],
        "last_breach_at": _iso(_epoch((breach or {}).get("at"))),
    }


# -- small pieces -------------------------------------------------------------------
@dataclass(frozen=True)
class _Rates:
    current: _Positions | None
    produced_per_s: float | None = None
    committed_per_s: float | None = None
    drain_per_s: float | None = None  # lag lost per second (negative: growing)

    @classmethod
    def between(cls, before: _Positions | None, now: _Positions | None) -> _Rates:
        if before is None or now is None or now.at <= before.at:
            return cls(now)
        span = now.at - before.at
        return cls(
            now,
            produced_per_s=max(0.0, (now.produced - before.produced) / span),
            committed_per_s=max(0.0, (now.committed - before.committed) / span),
            drain_per_s=(before.lag - now.lag) / span,
        )


def _ping(client: MongoClient[dict[str, Any]]) -> str | None:
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        return f"MongoDB did not answer: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def _guarded(down: str | None, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One section, or why it cannot be read (its server is down, or the read failed)."""
    if down is not None:
        return {"available": False, "error": down}
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - one unreadable section must not hide the others
        return {"available": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def _epoch(value: Any) -> float | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class ProgressPage:
    """``/progress`` on a long-running process's HTTP port: the status document as JSON.

    Read at most every ``min_interval_s`` (a dashboard polling every second must not
    turn into a compare of Kafka and MongoDB per poll), the rates from the previous
    reading. One per migration; several make one document keyed by migration.
    """

    def __init__(self, settings: Settings | list[Settings], *, min_interval_s: float = 5.0) -> None:
        many = settings if isinstance(settings, list) else [settings]
        self._keyed = isinstance(settings, list)
        self._readers = [StatusReader(s, first_interval_s=0) for s in many]
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._body = b""
        self._read_at = 0.0

    def __call__(self, _environ: dict[str, Any]) -> tuple[str, str, bytes]:
        with self._lock:
            if not self._body or time.monotonic() - self._read_at >= self._min_interval_s:
                docs = [reader.read() for reader in self._readers]
                body: Any = {d["migration"]: d for d in docs} if self._keyed else docs[0]
                self._body = json.dumps(body, default=str).encode()
                self._read_at = time.monotonic()
            return "200 OK", "application/json", self._body

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
