"""The status document: every section read once, then ``can_cutover``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from stream_migrator.mongo import connect
from stream_migrator.reconcile.lag import LagProbe, LagReport
from stream_migrator.reconcile.settings import ReconcileSettings, load_reconcile_settings
from stream_migrator.settings import Settings
from stream_migrator.status.capture import capture_section
from stream_migrator.status.cutover import cutover_blockers
from stream_migrator.status.rates import Positions, Rates, positions
from stream_migrator.status.reconcile import last_reconcile
from stream_migrator.status.rollout import rollout_section
from stream_migrator.status.times import iso
from stream_migrator.status.transform import quarantine_section, transform_section

#: A reconcile that finished longer ago than this does not prove the target now.
DEFAULT_MAX_RECONCILE_AGE_S = 3600.0
#: Seconds between the two readings a fresh reader takes for its first rates.
DEFAULT_FIRST_INTERVAL_S = 1.0
_KAFKA_TIMEOUT_S = 5.0
_MONGO_TIMEOUT_MS = 3_000


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
        self._previous: Positions | None = None

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self._client.close()

    def read(self) -> dict[str, Any]:
        """One reading of every section, plus ``can_cutover`` and its reasons."""
        s, client = self.settings, self._client
        mongo_error = _ping(client)
        lag = self._measure_lag(mongo_up=mongo_error is None)
        kafka_error = None if lag.known or lag.topic_missing else lag.error
        now = self._clock()
        rates = Rates.between(self._previous, positions(lag))
        if rates.current is not None:
            self._previous = rates.current

        capture = _guarded(mongo_error, lambda: capture_section(client, s, lag, rates, now))
        transform = _guarded(kafka_error, lambda: transform_section(s, lag, rates, self._timeout))
        quarantine = _guarded(kafka_error, lambda: quarantine_section(s, self._timeout))
        reconcile = _guarded(mongo_error, lambda: last_reconcile(client, s, now))
        rollout = _guarded(mongo_error, lambda: rollout_section(client, s))
        doc: dict[str, Any] = {
            "migration": s.migration,
            "source": s.source,
            "target": s.target,
            "measured_at": iso(now),
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
                self._previous = positions(first)
                self._sleep(self._first_interval_s)
        return self._probe.measure(client, s.source if mongo_up else None, timeout=self._timeout)


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
