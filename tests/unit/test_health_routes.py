"""A process's HTTP server: extra pages beside /metrics and /healthz (real loopback server)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

from stream_migrator.observability.health import HealthServer, HealthState


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_extra_pages_are_served_and_a_failing_page_answers_500() -> None:
    """/progress-like routes answer; a page that raises is a 500 naming the error."""

    def broken(_environ: dict[str, Any]) -> tuple[str, str, bytes]:
        raise RuntimeError("kafka down")

    routes = {
        "/progress": lambda _e: ("200 OK", "application/json", b'{"ok": true}'),
        "/broken": broken,
    }
    with HealthServer(HealthState("t"), port=0, routes=routes) as server:
        assert _get(server.port, "/progress") == (200, '{"ok": true}')
        code, body = _get(server.port, "/broken")
        assert code == 500
        assert json.loads(body) == {"error": "RuntimeError: kafka down"}
        assert _get(server.port, "/readyz")[0] == 503  # the probes still answer: not ready yet


def test_a_slow_page_does_not_hold_up_the_probes() -> None:
    """One thread per request: /healthz answers while a page is still being computed."""
    release = threading.Event()

    def slow(_environ: dict[str, Any]) -> tuple[str, str, bytes]:
        release.wait(30)
        return "200 OK", "text/plain", b"done"

    state = HealthState("t")
    state.beat("ok")
    with HealthServer(state, port=0, routes={"/slow": slow}) as server:
        waiting = threading.Thread(target=_get, args=(server.port, "/slow"), daemon=True)
        waiting.start()
        try:
            assert _get(server.port, "/healthz")[0] == 200
        finally:
            release.set()
            waiting.join(10)
