"""The rollout console's pure parts: fence rows, the measurement ring, the page, the document."""

from __future__ import annotations

import datetime as dt
import json
import re
from types import SimpleNamespace
from typing import Any

from stream_migrator.rollout.console import AUDIT_ROWS, ConsoleData, ConsolePage, fence_rows
from stream_migrator.rollout.evaluation import MeasurementHistory
from stream_migrator.rollout.fences import Measurements
from stream_migrator.rollout.plan import Fences, MigrationPlan


def test_fence_rows_mark_breach_ok_and_unmeasured_as_the_controller_does() -> None:
    """A row per fence with a limit: breach as fences.evaluate says, no value unmeasured."""
    fences = Fences(max_lag_events=10, max_divergence_ratio=0.01, max_p99_apply_seconds=1.0)
    rows = fence_rows(fences, {"lag_events": 11, "divergence_ratio": 0.01, "error_rate": 0.5})
    assert rows == [
        {"fence": "lag_events", "limit": 10, "value": 11, "state": "breach"},
        {"fence": "divergence_ratio", "limit": 0.01, "value": 0.01, "state": "ok"},
        {"fence": "p99_apply_seconds", "limit": 1.0, "value": None, "state": "unmeasured"},
    ]
    assert [r["state"] for r in fence_rows(fences, None)] == ["unmeasured"] * 3


def test_measurement_history_keeps_the_newest_in_order_and_is_bounded() -> None:
    """The ring keeps the last ``size`` evaluations per migration, oldest first."""
    history = MeasurementHistory(size=3)
    for i in range(5):
        history.record("a", Measurements(lag_events=i), at=float(i))
    history.record("b", Measurements(divergence_ratio=0.5), at=9.0)
    assert [(at, f["lag_events"]) for at, f in history.of("a")] == [(2.0, 2), (3.0, 3), (4.0, 4)]
    assert history.of("b")[0][1]["divergence_ratio"] == 0.5
    assert history.of("unknown") == []


def test_console_page_is_self_contained_and_read_only() -> None:
    """The HTML loads nothing from elsewhere, has no form or button, and refuses a POST."""
    status, content_type, body = ConsolePage()({"REQUEST_METHOD": "GET"})
    html = body.decode()
    assert status == "200 OK"
    assert content_type.startswith("text/html")
    assert re.search(r"\b(src|href)\s*=", html) is None  # no external scripts, styles, fonts
    assert "<form" not in html
    assert "<button" not in html
    assert 'fetch(path, { cache: "no-store" })' in html  # reads only, with GET
    assert "/console.json" in html
    assert "/progress" in html
    assert "audited CLI" in html
    assert ConsolePage()({"REQUEST_METHOD": "POST"})[0] == "405 Method Not Allowed"


class _Coll:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def find(self, query: dict[str, Any]) -> _Coll:
        return _Coll([d for d in self.docs if d["migration"] == query["migration"]])

    def sort(self, _keys: Any) -> list[dict[str, Any]]:
        return self.docs  # appended in order already


def _controller(trail: list[dict[str, Any]]) -> Any:
    m = MigrationPlan("orders", "orders.v1_to_v2", "db.o", "db.o2", fences=Fences(max_lag_events=5))
    state = SimpleNamespace(
        stage="verify",
        tier=-1,
        percentage=0.0,
        read_path="old",
        halted=False,
        halt_reason=None,
        hold_reason=None,
        version=3,
        updated_at=dt.datetime(2026, 1, 2, 3, 4, 5),
    )
    return SimpleNamespace(
        plan=SimpleNamespace(
            name="p", migrations=(m,), evaluation_interval_s=5.0, advance_every_s=0.0
        ),
        store=SimpleNamespace(load=lambda _name: state),
        client={"meta": {"audit": _Coll(trail)}},
        settings=SimpleNamespace(metadata_db="meta"),
        history=MeasurementHistory(),
    )


def _entry(i: int, action: str, frm: str | None, to: str | None) -> dict[str, Any]:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
    return {"migration": "orders", "at": at, "action": action, "from": frm, "to": to}


def test_console_document_takes_timeline_audit_and_quarantine_from_their_stores() -> None:
    """Timeline = stage changes; audit = last 30, newest first; quarantine from /progress."""
    trail = [
        _entry(0, "init", None, "planned"),
        _entry(1, "advance", "planned", "shadow"),
        *(_entry(2 + i, "fence_hold", "shadow", "shadow") for i in range(40)),
        _entry(50, "advance", "shadow", "verify"),
    ]
    controller = _controller(trail)
    recorded = {"evaluated_at": "2026-01-01T00:00:50+00:00", "measured": {"lag_events": 7}}
    status = {
        "orders": {"quarantine": {"available": True, "count": 2}, "rollout": {"fences": recorded}}
    }
    reads: list[int] = []

    def progress(_environ: dict[str, Any]) -> tuple[str, str, bytes]:
        reads.append(1)
        return "200 OK", "application/json", json.dumps(status).encode()

    page = ConsoleData(controller, progress, min_interval_s=3600)
    doc = json.loads(page({"REQUEST_METHOD": "GET"})[2])
    (m,) = doc["migrations"]
    assert m["state"]["stage"] == "verify"
    assert m["state"]["updated_at"] == "2026-01-02T03:04:05+00:00"
    assert [t["to"] for t in m["timeline"]] == ["planned", "shadow", "verify"]
    assert len(m["audit"]) == AUDIT_ROWS
    assert m["audit"][0]["to"] == "verify"  # newest first
    assert m["quarantine"] == {"count": 2, "available": True, "error": None}
    # No evaluation since the controller started: the audit trail's last one, which breaches.
    assert m["measured_at"] == recorded["evaluated_at"]
    assert m["fences"] == [{"fence": "lag_events", "limit": 5, "value": 7, "state": "breach"}]
    assert m["history"] == []

    controller.history.record("orders", Measurements(lag_events=1, divergence_ratio=0.0), at=1.0)
    assert json.loads(page({"REQUEST_METHOD": "GET"})[2]) == doc  # cached: read once an interval
    assert len(reads) == 1
    fresh = ConsoleData(controller, progress, min_interval_s=0).document()["migrations"][0]
    assert fresh["history"] == [{"at": 1.0, "lag_events": 1, "divergence_ratio": 0.0}]
    assert fresh["fences"][0]["state"] == "ok"
    assert page({"REQUEST_METHOD": "PUT"})[0] == "405 Method Not Allowed"
