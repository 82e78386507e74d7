"""Entry points: one reconcile, the cutover gate, and the long-running ``--watch`` mode."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import structlog

from stream_migrator.kafka import AckedProducer, producer_config
from stream_migrator.mongo import connect
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.reconcile import metrics as rm
from stream_migrator.reconcile.engine import Reconciler
from stream_migrator.reconcile.lag import LagProbe, LagReport
from stream_migrator.reconcile.repair import repair as run_repair
from stream_migrator.reconcile.report import KINDS, ReconcileReport, Verdict
from stream_migrator.reconcile.settings import ReconcileSettings, load_reconcile_settings
from stream_migrator.reconcile.sides import ProgressFn
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings

log = get_logger("reconcile")


@contextlib.contextmanager
def _reconciler(
    settings: ReconcileSettings, stop: StopFlag | None, progress: ProgressFn | None
) -> Iterator[Reconciler]:
    client = connect(settings.mongo_uri.get_secret_value(), app="reconcile")
    probe = LagProbe(
        settings.kafka_bootstrap,
        settings.consumer_group,
        settings.changes_topic,
        settings.kafka_client,
    )
    try:
        yield Reconciler(settings, client, probe, stop=stop, progress=progress)
    finally:
        probe.close()
        client.close()


def run_reconcile(
    settings: ReconcileSettings,
    *,
    sample: float | None = None,
    restart: bool = False,
    repair: bool = False,
    delete_orphans: bool = False,
    stop: StopFlag | None = None,
    progress: ProgressFn | None = None,
    repair_progress: ProgressFn | None = None,
) -> ReconcileReport:
    """One compare (resuming an interrupted full one unless ``restart``), then optional repair.

    ``progress`` follows the compare's scan, ``repair_progress`` the re-emission.
    """
    structlog.contextvars.bind_contextvars(migration=settings.migration, process="reconcile")
    with _reconciler(settings, stop, progress) as reconciler:
        report = reconciler.run(sample=sample, restart=restart)
        if repair and not report.interrupted and (report.divergent or delete_orphans):
            producer = AckedProducer(
                producer_config(
                    settings.kafka_bootstrap,
                    f"sm-reconcile-{socket.gethostname()}",
                    settings.kafka_client,
                )
            )
            try:
                run_repair(
                    settings,
                    reconciler,
                    producer,
                    report,
                    delete_orphans=delete_orphans,
                    progress=repair_progress,
                )
            finally:
                producer.close()
    export(report)
    return report


def gate(settings: Settings, *, sample: float | None = None) -> Verdict:
    """The rollout controller's cutover gate: a fresh compare (full unless ``sample``) + lag.

    Always a new run (never resumes): a verdict must describe the target now.
    """
    rs = settings if isinstance(settings, ReconcileSettings) else load_reconcile_settings(settings)
    return run_reconcile(rs, sample=sample, restart=True).verdict


def export(report: ReconcileReport) -> None:
    """Publish a report's figures as Prometheus gauges."""
    m = report.migration
    rm.DIVERGENCE_RATIO.labels(m).set(report.divergence_ratio)
    for kind in KINDS:
        rm.DIVERGENT_DOCUMENTS.labels(m, kind).set(report.counts[kind])
    for path, share in report.coverage.items():
        rm.FIELD_COVERAGE.labels(m, path).set(share)
    export_lag(m, report.lag)
    rm.READY.labels(m).set(1 if report.verdict.ready else 0)
    rm.RUNS.labels(m, report.mode, "ready" if report.verdict.ready else "not_ready").inc()
    rm.LAST_RUN_SECONDS.labels(m).set(report.duration_s)


def export_lag(migration: str, lag: LagReport) -> None:
    if lag.known:
        rm.LAG_EVENTS.labels(migration).set(lag.events)
        rm.LAG_SECONDS.labels(migration).set(lag.seconds)
    capture = lag.capture_lag_seconds
    if capture is not None:
        rm.CAPTURE_LAG_SECONDS.labels(migration).set(capture)


def watch_loop(
    settings: ReconcileSettings,
    stop: StopFlag,
    health: HealthState,
    probe: LagProbe,
    *,
    sample: float | None = None,
) -> None:
    """Re-measure every ``reconcile_interval_s`` and export metrics until ``stop``.

    Between compares, lag is refreshed every few seconds (cheap: offsets only). The
    process around it (health server, ``/progress``, the probe) is built by
    :func:`stream_migrator.app.run_watch`.
    """

    def beat(done: int, total: int) -> None:
        health.beat("ok", scanned=done, estimated_total=total)

    while not stop.is_set():
        report = run_reconcile(settings, sample=sample, restart=True, stop=stop, progress=beat)
        health.beat(
            "ok",
            ready=report.verdict.ready,
            divergent=report.divergent,
            lag_events=report.lag.events,
        )
        log.info(
            "reconcile.measured",
            ready=report.verdict.ready,
            reasons=report.verdict.reasons,
            divergence_ratio=report.divergence_ratio,
        )
        waited = 0.0
        while waited < settings.reconcile_interval_s and not stop.is_set():
            step = min(5.0, settings.reconcile_interval_s - waited)
            stop.wait(step)
            waited += step
            export_lag(settings.migration, probe.measure(None, None))
            health.beat("ok")
    health.beat("draining")
