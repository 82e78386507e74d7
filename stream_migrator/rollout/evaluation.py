"""Fence evaluation: the gate's verdict and the pipeline's measurements against the fences."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from stream_migrator.kafka import consumer_config
from stream_migrator.rollout import metrics as rm
from stream_migrator.rollout.fences import Breach, Measurements, evaluate, measure, missing
from stream_migrator.rollout.gate import Gate, VerdictLike
from stream_migrator.rollout.plan import MigrationPlan
from stream_migrator.settings import Settings


@dataclass(frozen=True)
class Evaluation:
    verdict: VerdictLike
    measured: Measurements
    breaches: list[Breach]
    #: Fences with a limit but no measurement, and whether they hold the stage.
    missing: list[str] = dataclasses.field(default_factory=list)
    hold_on_missing: bool = True

    @property
    def healthy(self) -> bool:
        return not self.breaches

    @property
    def held(self) -> bool:
        """A fence cannot be checked and the plan says hold (``on_missing = "hold"``)."""
        return bool(self.missing) and self.hold_on_missing

    @property
    def hold_reason(self) -> str:
        """Why the stage is held, and how to end it (recorded once per distinct cause)."""
        return (
            f"held: fence(s) {', '.join(self.missing)} have no measurement (on_missing = "
            '"hold"); make them measurable (metrics_urls reachable, topics present) or set '
            '[migration.fences] on_missing = "skip"'
        )

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"measured": vars(self.measured), "gate": self.verdict.reasons}
        if self.missing:
            out["unmeasured"] = self.missing
        return out


class MeasurementHistory:
    """The last ``size`` fence measurements of each migration (the console's sparklines).

    Kept in memory only, so a restarted controller starts with an empty history:
    the audit trail stays the record, this is only for drawing the recent trend.
    """

    def __init__(self, size: int = 120) -> None:
        self._size = size
        self._lock = threading.Lock()  # the console reads from the HTTP server's threads
        self._by_migration: dict[str, deque[tuple[float, dict[str, Any]]]] = {}

    def record(self, migration: str, measured: Measurements, at: float | None = None) -> None:
        with self._lock:
            ring = self._by_migration.setdefault(migration, deque(maxlen=self._size))
            ring.append((time.time() if at is None else at, dict(vars(measured))))

    def of(self, migration: str) -> list[tuple[float, dict[str, Any]]]:
        """(epoch seconds, measured fields) of each kept evaluation, oldest first."""
        with self._lock:
            return list(self._by_migration.get(migration, ()))


def evaluate_migration(
    m: MigrationPlan, s: Settings, gate: Gate, history: MeasurementHistory
) -> Evaluation:
    """Ask the gate, read the pipeline's measurements (``s``: ``m``'s), check every fence."""
    verdict = gate(s)
    consumer = Consumer(
        consumer_config(s.kafka_bootstrap, s.consumer_group, "sm-rollout", s.kafka_client)
    )
    try:
        measured = measure(
            verdict,
            consumer=consumer,
            changes_topic=s.changes_topic,
            quarantine_topic=s.quarantine_topic,
            migration=m.name,
            metrics_urls=m.metrics_urls,
        )
    finally:
        consumer.close()
    history.record(m.name, measured)
    for field_name, value in vars(measured).items():
        if value is not None:
            rm.FENCE_VALUE.labels(m.name, field_name).set(value)
    breaches = evaluate(m.fences, measured)
    for b in breaches:
        rm.FENCE_BREACHES.labels(m.name, b.fence).inc()
    unmeasured = missing(m.fences, measured)
    return Evaluation(verdict, measured, breaches, unmeasured, m.fences.on_missing == "hold")
