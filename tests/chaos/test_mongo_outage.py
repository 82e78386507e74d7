"""A MongoDB outage longer than the health window: capture is alive but not ready, then recovers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo.uri_parser import parse_uri

from stream_migrator.infra import free_port
from stream_migrator.settings import load_settings
from tests.integration.helpers import client_for, settings_env
from tests.integration.processes import Proc, health, metric, wait_for
from tests.integration.proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

#: Longer than HealthState's 30 s window: a loop that stops beating would go 503.
_OUTAGE_S = 35


def test_capture_stays_alive_but_unready_through_a_mongodb_outage(
    settings_kwargs: dict[str, Any], tmp_path: Path, procs: list[Proc]
) -> None:
    """/healthz 200 (backpressure), /readyz 503 all through the outage; then it captures again."""
    s = load_settings(**settings_kwargs)
    src = client_for(s)[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    src.insert_many([{"_id": ObjectId(), "cust_name": f"c{i}", "total": i} for i in range(5)])
    proxy = TcpProxy(parse_uri(s.mongo_uri.get_secret_value())["nodelist"][0])
    port = free_port()
    env = {**settings_env(s), "SM_MONGO_URI": proxy.uri, "SM_METRICS_PORT": str(port)}
    capture = Proc(["capture"], env, tmp_path / "capture.log")
    procs.append(capture)
    try:
        wait_for("/readyz 200", lambda: health(port, "/readyz")[0] == 200, proc=capture)
        captured = lambda: metric(port, "sm_events_captured_total") or 0.0  # noqa: E731
        wait_for("the snapshot", lambda: captured() >= 5, proc=capture)
        proxy.cut()
        wait_for("/readyz 503", lambda: health(port, "/readyz")[0] == 503, 60, proc=capture)
        seen = set()
        deadline = time.monotonic() + _OUTAGE_S
        while time.monotonic() < deadline:
            status, body = health(port)
            assert status == 200, (body, capture.text()[-3000:])
            seen.add(body["status"])
            time.sleep(1)
        assert "backpressure" in seen, seen
        assert "mongo_unavailable" in capture.text()
        proxy.restore()
        wait_for("/readyz 200 again", lambda: health(port, "/readyz")[0] == 200, 90, proc=capture)
        assert "error" not in health(port)[1]  # recovered: the old failure is not shown as current
        src.insert_one({"_id": ObjectId(), "cust_name": "after the outage", "total": 1})
        wait_for("the new change", lambda: captured() >= 6, 60, proc=capture)
        assert capture.terminate() == 0
    finally:
        proxy.cut()
