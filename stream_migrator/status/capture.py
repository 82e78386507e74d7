"""The capture section: phase, snapshot progress, resume-token age and capture lag."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.reconcile.lag import LagReport
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.status.rates import Rates
from stream_migrator.status.times import epoch, iso


def capture_section(
    client: MongoClient[dict[str, Any]],
    settings: ReconcileSettings,
    lag: LagReport,
    rates: Rates,
    now: float,
) -> dict[str, Any]:
    """From capture's checkpoint: not_started, snapshot, streaming or stopped, with figures."""
    s = settings
    checkpoint = MongoCheckpointStore(client, s.metadata_db, s.migration).load()
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
    out["snapshot"] = _snapshot(client, s, snapshot, done, rates)
    saved_at = checkpoint.get("updated_at")
    token_time = resume_token_time(checkpoint.get("resume_token"))
    basis, since = (
        ("resume token cluster time", token_time)
        if token_time is not None
        else ("last checkpoint save", epoch(saved_at))
    )
    out["streaming"] = {
        "resume_token_age_s": None if since is None else round(max(0.0, now - since), 1),
        "resume_token_age_basis": basis,
        "last_checkpoint_at": iso(epoch(saved_at)),
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
    client: MongoClient[dict[str, Any]],
    s: ReconcileSettings,
    snapshot: dict[str, Any],
    done: bool,
    rates: Rates,
) -> dict[str, Any]:
    sdb, scoll = s.split_ns(s.source)
    total = client[sdb][scoll].estimated_document_count()
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
