"""One HTTP endpoint per process: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (JSON).

``/healthz`` answers "is the main loop alive?" (a liveness probe restarts the
process on 503); ``/readyz`` answers "is it connected and doing its job?" (a
readiness probe only marks it unready): 200 once the process has reached its
servers and beats ``ok``, 503 while starting, under backpressure, draining,
halted or stalled.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from stream_migrator.observability import metrics as m
from stream_migrator.observability.logging import get_logger

log = get_logger("health")

#: What every process's server answers, as its start-up log line says.
PATHS = ("/metrics", "/healthz", "/readyz")

#: A further page of one process's server (``/progress``, the rollout console):
#: the WSGI environ -> (HTTP status line, content type, body).
Route = Callable[[dict[str, Any]], tuple[str, str, bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow page must not hold up a probe or a scrape."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


#: Statuses in which the process is connected and working: ``/readyz`` answers 200.
_READY = frozenset({"ok"})
#: Statuses of a live main loop: ``/healthz`` answers 200. Backpressure and a halt
#: are deliberate waits; a liveness restart there would turn them into a crash loop.
_ALIVE = frozenset({"ok", "starting", "draining", "backpressure", "halted"})


class HealthState:
    """What ``/healthz`` reports; the process updates it from its main loop."""

    def __init__(
        self, component: str, stale_after_s: float = 30.0, *, migration: str | None = None
    ) -> None:
        self.component = component
        self.migration = migration
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
            if status in _READY:
                self._detail.pop("error", None)  # recovered: the last failure is history
            self._detail.update(detail)
        if self.migration is not None:
            # Metrics let Prometheus see a stuck loop even when nobody polls /healthz.
            m.LAST_PROGRESS.labels(self.migration, self.component).set_to_current_time()
            m.READY.labels(self.migration, self.component).set(1 if status in _READY else 0)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: connected (status ``ok``) and the main loop beat recently."""
        alive, body = self.snapshot()
        return alive and body["status"] in _READY, body

    def snapshot(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            age = time.monotonic() - self._last_progress
            healthy = self._status in _ALIVE and age < self.stale_after_s
            body = {
                "component": self.component,
                "status": self._status if age < self.stale_after_s else "stalled",
                "seconds_since_progress": round(age, 3),
                **self._detail,
            }
        return healthy, body


class HealthServer:
    """Serves metrics and health on a background thread; ``port=0`` picks a free port."""

    def __init__(
        self,
        state: HealthState,
        host: str = "127.0.0.1",
        port: int = 0,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        metrics_app = make_wsgi_app()
        pages = dict(routes or {})

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO")
            page = pages.get(path or "")
            if page is not None:
                try:
                    status, content_type, content = page(environ)
                except Exception as exc:  # noqa: BLE001 - a page's failure is its answer
                    log.warning("http.page_failed", path=path, error=str(exc))
                    status, content_type = "500 Internal Server Error", "application/json"
                    content = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
                start(status, [("Content-Type", content_type)])
                return [content]
            if path in {"/healthz", "/readyz"}:
                healthy, body = state.snapshot() if path == "/healthz" else state.readiness()
                payload = json.dumps(body, default=str).encode()
                status = "200 OK" if healthy else "503 Service Unavailable"
                start(status, [("Content-Type", "application/json")])
                return [payload]
            result: Iterable[bytes] = metrics_app(environ, start)
            return result

        self._server: WSGIServer = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
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


@contextlib.contextmanager
def serve_health(
    state: HealthState, host: str, port: int, routes: Mapping[str, Route] | None = None
) -> Iterator[HealthServer]:
    """A process's health server for the ``with`` block, its port logged (``http.listening``).

    Why one helper: the log line is how an operator (and a test) finds a server
    started on ``port=0``; every long-running process must say it the same way.
    """
    with HealthServer(state, host, port, routes) as server:
        log.info("http.listening", port=server.port, paths=[*PATHS, *(routes or {})])
        yield server
