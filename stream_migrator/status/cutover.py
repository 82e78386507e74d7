"""``can_cutover``: every reason the status document gives against cutting over now."""

from __future__ import annotations

from typing import Any

from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.rollout.stages import Stage


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
