"""The rollout console: a read-only page on ``rollout run``'s HTTP port (``/``, ``/console.json``).

``/`` is one static HTML file (``console.html``, package data) whose inline script
polls ``/console.json`` and ``/progress``; nothing is built and nothing is loaded
from elsewhere (the machines running a rollout often have no internet).

Why read-only: every stage change must go through the audited CLI (``rollout
advance|halt|resume|rollback``), which names its operator. The page therefore
has no form and no button, and its routes answer 405 to anything but GET/HEAD.

``/console.json``, per planned migration: the rollout state, the stage timeline
and the last audit entries (the audit trail), the fences (the plan's limits, the
last measured values and which of them breach), the recent measurements
(:class:`~stream_migrator.rollout.evaluation.MeasurementHistory`) and the
quarantine count (the status document, as ``/progress`` serves it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from stream_migrator.observability.health import Route
from stream_migrator.rollout import audit
from stream_migrator.rollout.controller import Controller
from stream_migrator.rollout.fences import Measurements, evaluate
from stream_migrator.rollout.plan import Fences, MigrationPlan

#: Audit entries shown per migration (newest first).
AUDIT_ROWS = 30
#: The measured fields drawn as sparklines.
SPARKLINES = ("lag_events", "divergence_ratio")

_READ_METHODS = frozenset({"GET", "HEAD"})
_NOT_ALLOWED = (
    "405 Method Not Allowed",
    "text/plain; charset=utf-8",
    b"the rollout console is read-only: change stages with `stream-migrator rollout ...`\n",
)


def console_routes(
    controller: Controller, progress: Route, *, min_interval_s: float = 2.0
) -> dict[str, Route]:
    """``/`` and ``/console.json`` for :class:`~stream_migrator.observability.HealthServer`.

    ``progress`` is the ``/progress`` page of the same process: the quarantine
    count comes from its status documents, so the two pages never disagree.
    """
    return {"/": ConsolePage(), "/console.json": ConsoleData(controller, progress, min_interval_s)}


class ConsolePage:
    """``/``: the console's HTML (read once from the package)."""

    def __init__(self) -> None:
        self._html = resources.files(__package__).joinpath("console.html").read_bytes()

    def __call__(self, environ: dict[str, Any]) -> tuple[str, str, bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in _READ_METHODS:
            return _NOT_ALLOWED
        return "200 OK", "text/html; charset=utf-8", self._html


class ConsoleData:
    """``/console.json``: read at most every ``min_interval_s`` (the page polls every few s)."""

    def __init__(
        self,
        controller: Controller,
        progress: Route,
        min_interval_s: float = 2.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._controller = controller
        self._progress = progress
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._body = b""
        self._read_at = 0.0

    def __call__(self, environ: dict[str, Any]) -> tuple[str, str, bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in _READ_METHODS:
            return _NOT_ALLOWED
        with self._lock:
            if not self._body or time.monotonic() - self._read_at >= self._min_interval_s:
                self._body = json.dumps(self.document(), default=str).encode()
                self._read_at = time.monotonic()
            return "200 OK", "application/json", self._body

    def document(self) -> dict[str, Any]:
        """The whole console document (see the module docstring)."""
        c = self._controller
        _, _, body = self._progress({"REQUEST_METHOD": "GET", "PATH_INFO": "/progress"})
        statuses: dict[str, Any] = json.loads(body)
        return {
            "plan": c.plan.name,
            "generated_at": _iso(self._clock()),
            "evaluation_interval_s": c.plan.evaluation_interval_s,
            "advance_every_s": c.plan.advance_every_s,
            "read_only": True,
            "migrations": [
                self._migration(m, statuses.get(m.name) or {}) for m in c.plan.migrations
            ],
        }

    def _migration(self, m: MigrationPlan, status: dict[str, Any]) -> dict[str, Any]:
        c = self._controller
        state = c.store.load(m.name)  # load, not status(): the console never writes
        trail = audit.entries(c.client, c.settings.metadata_db, m.name)
        history = c.history.of(m.name)
        if history:
            measured_at: str | None = _iso(history[-1][0])
            measured: dict[str, Any] | None = history[-1][1]
        else:
            # A controller just (re)started: the last evaluation the audit trail recorded.
            recorded = (status.get("rollout") or {}).get("fences") or {}
            measured_at, measured = recorded.get("evaluated_at"), recorded.get("measured")
        quarantine = status.get("quarantine") or {}
        return {
            "name": m.name,
            "source": m.source,
            "target": m.target,
            "state": None
            if state is None
            else {
                "stage": str(state.stage),
                "tier": state.tier,
                "percentage": state.percentage,
                "read_path": state.read_path,
                "halted": state.halted,
                "halt_reason": state.halt_reason,
                "hold_reason": state.hold_reason,
                "version": state.version,
                "updated_at": _iso_dt(state.updated_at),
            },
            "timeline": [
                {
                    "at": _iso_dt(e.get("at")),
                    "action": e["action"],
                    "from": e["from"],
                    "to": e["to"],
                }
                for e in trail
                if e.get("to") is not None and e.get("to") != e.get("from")
            ],
            "audit": [
                {
                    "at": _iso_dt(e.get("at")),
                    "action": e["action"],
                    "from": e["from"],
                    "to": e["to"],
                    "operator": e.get("operator"),
                    "reason": e.get("reason", ""),
                }
                for e in reversed(trail[-AUDIT_ROWS:])
            ],
            "fences": fence_rows(m.fences, measured),
            "measured": measured,
            "measured_at": measured_at,
            "history": [
                {"at": at, **{k: fields.get(k) for k in SPARKLINES}} for at, fields in history
            ],
            "quarantine": {
                "count": quarantine.get("count"),
                "available": bool(quarantine.get("available")),
                "error": quarantine.get("error"),
            },
        }


def fence_rows(fences: Fences, measured: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per fence with a limit: its limit, last measured value, and breach.

    The breach is :func:`~stream_migrator.rollout.fences.evaluate`'s, the one the
    controller halts on, so the table cannot disagree with the controller.
    """
    known = {f.name for f in dataclasses.fields(Measurements)}
    values = {k: v for k, v in (measured or {}).items() if k in known}
    breached = {b.fence for b in evaluate(fences, Measurements(**values))}
    rows = []
    for f in dataclasses.fields(Fences):
        limit = getattr(fences, f.name)
        measure = f.name.removeprefix("max_")
        if not f.name.startswith("max_") or limit is None:
            continue
        value = values.get(measure)
        state = "unmeasured" if value is None else "breach" if measure in breached else "ok"
        rows.append({"fence": measure, "limit": limit, "value": value, "state": state})
    return rows


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _iso_dt(value: Any) -> str | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=value.tzinfo or dt.UTC).isoformat(timespec="seconds")
