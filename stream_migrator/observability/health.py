"""One HTTP endpoint per process: ``/metrics`` (Prometheus) and ``/healthz`` (JSON)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class HealthState:
    """What ``/healthz`` reports; the process updates it from its main loop."""

    def __init__(self, component: str, stale_after_s: float = 30.0) -> None:
        self.component = component
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._last_progress = time.monotonic()
        self._status = "starting"
        self._detail: dict[str, Any] = {}

    def beat(self, status: str = "ok", **detail: Any) -> None:
        """Record that the main loop is alive and how it stands."""
        with self._lock:
            self._last_progress = time.monotonic()
            self._status = status
            self._detail.update(detail)

    def snapshot(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            age = time.monotonic() - self._last_progress
            healthy = self._status in {"ok", "starting", "draining"} and age < self.stale_after_s
            body = {
                "component": self.component,
                "status": self._status if age < self.stale_after_s else "stalled",
                "seconds_since_progress": round(age, 3),
                **self._detail,
            }
        return healthy, body


class HealthServer:
    """Serves metrics and health on a background thread; ``port=0`` picks a free port."""

    def __init__(self, state: HealthState, host: str = "127.0.0.1", port: int = 0) -> None:
        metrics_app = make_wsgi_app()

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                healthy, body = state.snapshot()
                payload = json.dumps(body, default=str).encode()
                status = "200 OK" if healthy else "503 Service Unavailable"
                start(status, [("Content-Type", "application/json")])
                return [payload]
            result: Iterable[bytes] = metrics_app(environ, start)
            return result

        self._server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def __enter__(self) -> HealthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
