"""Pure logic of `status`: resume-token times, rates, can_cutover reasons, the table."""

from __future__ import annotations

import copy
from typing import Any

from stream_migrator.reconcile.settings import load_reconcile_settings
from stream_migrator.status.capture import resume_token_time
from stream_migrator.status.cutover import cutover_blockers
from stream_migrator.status.rates import Positions, Rates
from stream_migrator.status_view import render

_SETTINGS = load_reconcile_settings(
    None, reconcile_max_lag_events=10, reconcile_max_lag_seconds=5.0
)

_READY: dict[str, Any] = {
    "migration": "m",
    "source": "db.a",
    "target": "db.b",
    "measured_at": "2026-12-02T06:00:00+00:00",
    "capture": {
        "available": True,
        "error": None,
        "phase": "streaming",
        "snapshot": {
            "done": True,
            "estimated_total": 10,
            "copied": 10,
            "copied_basis": "x",
            "percent": 100.0,
            "rate_per_s": None,
            "eta_s": 0.0,
            "ranges": None,
            "ranges_done": None,
        },
        "streaming": {
            "resume_token_age_s": 1.0,
            "resume_token_age_basis": "resume token cluster time",
            "last_checkpoint_at": None,
            "capture_lag_s": 0.0,
            "capture_lag_error": None,
        },
        "stopped": None,
    },
    "transform": {
        "available": True,
        "error": None,
        "lag_events": 0,
        "lag_seconds": 0.0,
        "partitions": [],
        "applied_per_s": None,
        "drain_per_s": None,
        "drain_eta_s": 0.0,
        "members": 1,
    },
    "quarantine": {
        "available": True,
        "error": None,
        "topic": "q",
        "count": 0,
        "by_stage": {},
        "newest": None,
    },
    "reconcile": {
        "available": True,
        "error": None,
        "found": True,
        "run_id": "r1",
        "mode": "full",
        "state": "done",
        "started_at": None,
        "finished_at": None,
        "age_s": 10.0,
        "verdict": "READY",
        "ready": True,
        "reasons": [],
        "divergent": 0,
        "divergence_ratio": 0.0,
    },
    "rollout": {"available": True, "error": None, "found": False},
}


def _doc(**changes: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(_READY)
    for section, fields in changes.items():
        doc[section].update(fields)
    return doc


def test_resume_token_time_reads_the_cluster_time_of_a_mongodb_token() -> None:
    """A KeyString token (0x82 + seconds + increment) gives its seconds; others give None."""
    token = {"_data": "82" + f"{1_796_000_000:08X}" + "00000001" + "2B022C0100296E5A1004"}
    assert resume_token_time(token) == 1_796_000_000.0
    assert resume_token_time({"_data": "zz"}) is None
    assert resume_token_time({"_data": "01" + "0" * 30}) is None
    assert resume_token_time(None) is None
    assert resume_token_time({"_data": "82" + "00000001" + "00000001"}) is None  # 1970


def test_rates_between_two_readings() -> None:
    """Rates come from the difference of two readings; one reading alone gives none."""
    before = Positions(at=100.0, produced=100, committed=50, lag=50)
    now = Positions(at=102.0, produced=300, committed=250, lag=50)
    rates = Rates.between(before, now)
    assert rates.produced_per_s == 100.0
    assert rates.committed_per_s == 100.0
    assert rates.drain_per_s == 0.0
    assert Rates.between(None, now).produced_per_s is None
    assert Rates.between(now, now).produced_per_s is None


def test_ready_document_can_cut_over() -> None:
    """Every section fine: no reason."""
    assert cutover_blockers(_READY, _SETTINGS, 3600) == []


def test_every_blocker_is_named() -> None:
    """Snapshot, stop, lag, quarantine, old NOT READY reconcile and a halt each give a reason."""
    doc = _doc(
        capture={"phase": "stopped", "stopped": {"reason": "drop", "at": "T"}},
        transform={"lag_events": 11, "lag_seconds": 6.0},
        quarantine={
            "count": 2,
            "by_stage": {"transform": 2},
            "newest": {"reason": "address: bad"},
        },
        reconcile={
            "ready": False,
            "verdict": "NOT READY",
            "reasons": ["1 divergent"],
            "age_s": 7200,
        },
        rollout={"found": True, "halted": True, "halt_reason": "fence breached", "stage": "canary"},
    )
    doc["capture"]["snapshot"] = {**doc["capture"]["snapshot"], "done": False, "percent": 40.0}
    reasons = cutover_blockers(doc, _SETTINGS, 3600)
    assert reasons == [
        "capture stopped at a 'drop' event (T)",
        "snapshot not done (40% copied, approximate)",
        "11 events not yet applied (limit 10, SM_RECONCILE_MAX_LAG_EVENTS)",
        "oldest unapplied event is 6.0 s old (limit 5 s, SM_RECONCILE_MAX_LAG_SECONDS)",
        "2 events in quarantine (transform 2; newest: address: bad): fix them, then "
        "`stream-migrator quarantine replay`",
        "last reconcile NOT READY: 1 divergent",
        "last reconcile is too old (7200 s, limit 3600 s, --max-reconcile-age): run "
        "`stream-migrator reconcile`",
        "rollout halted: fence breached",
    ]


def test_unreadable_sections_fail_closed_and_show_why() -> None:
    """A section that could not be read blocks the cutover and the table says why."""
    down = {"available": False, "error": "Kafka did not answer: x"}
    doc = _doc()
    doc["transform"] = dict(down)
    doc["quarantine"] = dict(down)
    reasons = cutover_blockers(doc, _SETTINGS, 3600)
    assert reasons == [
        "transform lag unknown: Kafka did not answer: x",
        "quarantine unknown: Kafka did not answer: x",
    ]
    doc["can_cutover"] = False
    doc["cutover_blockers"] = reasons
    table = render(doc)
    assert "transform   unavailable: Kafka did not answer: x" in table
    assert "quarantine  unavailable: Kafka did not answer: x" in table
    assert "capture     streaming (snapshot done)" in table
    assert "can_cutover false" in table
