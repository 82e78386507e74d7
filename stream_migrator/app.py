"""Wiring: builds every long-running process from settings. Nothing else lives here.

The one place a process is put together: capture, the transform worker (forward
and reverse through one builder), the reverse stream (both halves in one
process) and ``rollout run``. Each gets its Mongo client, Kafka configs, guard
mode, health server and resources (one ``ExitStack``) from here, so a part
added to one process is added to all: a copy of this wiring once lost the
reverse worker's tombstone purge. The command modules parse arguments and call
these functions; the stage packages never import this module.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, Producer
from pymongo import MongoClient

from stream_migrator import events
from stream_migrator.capture import Capture, MongoCheckpointStore
from stream_migrator.capture.split_events import supports_split_events
from stream_migrator.capture.throttle import SnapshotThrottle
from stream_migrator.interfaces import DocumentSink, Transformer
from stream_migrator.kafka import (
    AckedProducer,
    consumer_config,
    ensure_topic,
    group_lag,
    producer_config,
)
from stream_migrator.kafka_retention import check_tombstone_retention, topic_retention
from stream_migrator.mongo import connect
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.observability.health import Route, serve_health
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.reconcile.service import watch_loop
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.rollout.console import console_routes
from stream_migrator.rollout.controller import Controller, migration_settings
from stream_migrator.rollout.reverse import (
    ReverseSink,
    inverted,
    reverse_settings,
    start_position,
)
from stream_migrator.rollout.settings import RolloutSettings
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec
from stream_migrator.status.progress_page import ProgressPage
from stream_migrator.transform import MongoSink, TransformWorker
from stream_migrator.transform.echo import is_forward_echo, is_marked_echo
from stream_migrator.transform.formats import decode_connector_event
from stream_migrator.transform.kafka_sink import KafkaTopicSink, default_sink_topic
from stream_migrator.transform.quarantine import Quarantine
from stream_migrator.transform.sink import TOMBSTONE_SUFFIX, GuardMode, detect_guard_mode

log = get_logger("app")


def _client_id(role: str) -> str:
    return f"sm-{role}-{socket.gethostname()}"


def stop_on_signals() -> StopFlag:
    """The process's stop flag, set by SIGTERM and SIGINT (call from the main thread)."""
    stop = StopFlag()
    stop.install_signal_handlers()
    return stop


def guard_mode(settings: Settings, client: MongoClient[dict[str, Any]]) -> GuardMode:
    """How target writes enforce the version guard: SM_WRITE_GUARD, ``auto`` detected."""
    return detect_guard_mode(client) if settings.write_guard == "auto" else settings.write_guard


def target_sink(settings: Settings, client: MongoClient[dict[str, Any]]) -> MongoSink:
    """The version-guarded sink of ``settings.target`` (the forward worker's, and replay's)."""
    db, coll = settings.split_ns(settings.target)
    return MongoSink(client[db][coll], guard_mode(settings, client))


def run_capture(settings: Settings, stop: StopFlag) -> Capture:
    """Run capture until ``stop`` is set; returns the finished Capture (for its counters)."""
    structlog.contextvars.bind_contextvars(migration=settings.migration, process="capture")
    log.info("capture.start", settings=settings.masked())
    health = HealthState("capture", migration=settings.migration)
    with contextlib.ExitStack() as stack:
        stack.enter_context(serve_health(health, settings.metrics_host, settings.metrics_port))
        _ensure_topics(settings)
        client = connect(settings.mongo_uri.get_secret_value(), app="capture")
        stack.callback(client.close)
        producer = AckedProducer(
            producer_config(settings.kafka_bootstrap, _client_id("capture"), settings.kafka_client)
        )
        stack.callback(producer.close)
        checkpoints = MongoCheckpointStore(client, settings.metadata_db, settings.migration)
        lag_consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.consumer_group,
                _client_id("capture-lag"),
                settings.kafka_client,
            )
        )
        stack.callback(lag_consumer.close)
        throttle = SnapshotThrottle(
            stop,
            max_per_second=settings.max_docs_per_second,
            lag_probe=lambda: group_lag(lag_consumer, settings.changes_topic),
            max_lag=settings.snapshot_max_lag,
            on_wait=lambda why: log.warning("snapshot.throttled", reason=why),
        )
        version = client.admin.command("buildInfo").get("versionArray", [0])
        capture = Capture(
            settings,
            client,
            producer,
            checkpoints,
            stop,
            health,
            throttle=throttle,
            split_events=supports_split_events(version),
        )
        health.beat("ok")
        capture.run()
        health.beat("draining")
        return capture


def run_transform(settings: Settings, stop: StopFlag) -> TransformWorker:
    """Run one transform worker until ``stop`` is set."""
    return _run_worker(
        settings,
        stop,
        process="transform",
        spec=lambda: get_spec(settings.spec, settings.hook_policy),
        sink=target_sink if settings.output == "mongodb" else None,
        decode=transform_decoder(settings),
        # During a rollout the reverse stream writes to the source; what it wrote,
        # unchanged since, is its echo and must not travel forward again.
        is_echo=lambda event: is_marked_echo(event.document),
    )


def run_reverse_capture(settings: Settings, stop: StopFlag) -> Capture:
    """Capture of the new collection into ``sm.<m>-reverse.changes`` (forward settings in)."""
    start_position(settings)
    return run_capture(reverse_settings(settings), stop)


def run_reverse_transform(settings: Settings, stop: StopFlag) -> TransformWorker:
    """Reverse worker (forward settings in): inverse transform, version-guarded writes to old.

    The forward worker's builder with the reverse settings (own topics and group),
    the inverse spec, :class:`ReverseSink` and its echo test; always our own
    envelope in and MongoDB out, whatever SM_INPUT_FORMAT and SM_OUTPUT say.
    """
    new_db, new_coll = settings.split_ns(settings.target)

    def sink(rev: Settings, client: MongoClient[dict[str, Any]]) -> MongoSink:
        db, coll = rev.split_ns(rev.target)
        forward_tombstones = client[new_db][f"{new_coll}.{TOMBSTONE_SUFFIX}"]
        return ReverseSink(client[db][coll], guard_mode(rev, client), forward_tombstones)

    return _run_worker(
        reverse_settings(settings),
        stop,
        process="reverse-transform",
        start_event="reverse.start",
        spec=lambda: inverted(get_spec(settings.spec, settings.hook_policy)),
        sink=sink,
        decode=events.decode,
        is_echo=is_forward_echo,
    )


def reverse_stream(settings: Settings, stop: StopFlag) -> tuple[list[threading.Thread], list[str]]:
    """Start the reverse capture and the reverse worker on threads (forward settings in).

    Returns the threads and the names of the stages that have ended (appended as
    each ends); a stage that raises is logged as ``reverse.stage_failed``.
    """
    # One process, one /metrics + /healthz port: the worker serves SM_METRICS_PORT (its
    # registry holds the capture's metrics too); the capture's own server gets a free
    # loopback port, else two servers on one fixed port (9400 in the manifests) would
    # kill the capture at start with "Address already in use".
    capture_settings = settings.model_copy(update={"metrics_port": 0, "metrics_host": "127.0.0.1"})
    ended: list[str] = []

    def stage(fn: Callable[[Settings, StopFlag], object], stage_settings: Settings) -> None:
        try:
            fn(stage_settings, stop)
        except Exception:
            log.exception("reverse.stage_failed", stage=fn.__name__)
        finally:
            ended.append(fn.__name__)

    threads = [
        threading.Thread(target=stage, args=(fn, st), name=fn.__name__, daemon=True)
        for fn, st in ((run_reverse_capture, capture_settings), (run_reverse_transform, settings))
    ]
    for t in threads:
        t.start()
    return threads, ended


def run_reverse(settings: Settings, stop: StopFlag) -> int:
    """``rollout reverse``: both halves in one process until ``stop``; 1 if a stage ended."""
    threads, ended = reverse_stream(settings, stop)
    while not stop.wait(1.0):
        if ended:
            stop.set(f"a reverse stage ended: {', '.join(ended)}")
    # Only a signal is a clean stop; a stage that ended on its own is a failure to report.
    failed = not (stop.reason or "").startswith("SIG")
    for t in threads:
        t.join(60)
    stuck = [t.name for t in threads if t.is_alive()]
    report = log.error if failed or stuck else log.info
    report("reverse.stopped", reason=stop.reason, failed=failed, not_stopped=stuck)
    return 1 if failed or stuck else 0


def run_rollout(
    settings: RolloutSettings, controller: Controller, stop: StopFlag, *, plan_file: str
) -> None:
    """``rollout run``: the controller's schedule until ``stop``, serving /healthz and /metrics."""
    structlog.contextvars.bind_contextvars(process="rollout")
    log.info("rollout.start", plan=plan_file, settings=settings.masked())
    # A tick may wait for a rollback: two drains and the routers' acknowledgement
    # (up to their lease); liveness must outlast that wait.
    stale_after = max(
        30.0, 3 * controller.plan.evaluation_interval_s, 2 * settings.drain_timeout_s + 60.0
    )
    health = HealthState("rollout", stale_after_s=stale_after)
    progress = ProgressPage([migration_settings(settings, m) for m in controller.plan.migrations])
    # The console (/, /console.json) is read-only: stage changes stay in the audited CLI.
    pages: dict[str, Route] = {"/progress": progress, **console_routes(controller, progress)}
    try:
        with serve_health(health, settings.metrics_host, settings.metrics_port, pages):
            controller.run(stop, health)
    finally:
        progress.close()


def run_watch(settings: ReconcileSettings, stop: StopFlag, *, sample: float | None = None) -> None:
    """``reconcile --watch``: re-measure until ``stop``, serving /metrics, health, /progress."""
    structlog.contextvars.bind_contextvars(migration=settings.migration, process="reconcile")
    log.info("reconcile.watch.start", settings=settings.masked(), sample=sample)
    health = HealthState(
        "reconcile", stale_after_s=max(120.0, 3 * settings.reconcile_recheck_timeout_s)
    )
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(contextlib.closing(ProgressPage(settings)))
        routes = {"/progress": progress}
        stack.enter_context(
            serve_health(health, settings.metrics_host, settings.metrics_port, routes)
        )
        probe = LagProbe(
            settings.kafka_bootstrap,
            settings.consumer_group,
            settings.changes_topic,
            settings.kafka_client,
        )
        stack.callback(probe.close)
        watch_loop(settings, stop, health, probe, sample=sample)
    log.info("reconcile.watch.stopped", reason=stop.reason)


def _run_worker(
    settings: Settings,
    stop: StopFlag,
    *,
    process: str,
    spec: Callable[[], Transformer],
    sink: Callable[[Settings, MongoClient[dict[str, Any]]], MongoSink] | None,
    decode: Callable[[bytes | None], events.ChangeEvent],
    is_echo: Callable[[events.ChangeEvent], bool],
    start_event: str | None = None,
) -> TransformWorker:
    """One transform worker until ``stop``: the forward and the reverse one are built here.

    ``sink`` builds the MongoDB sink, whose expired tombstones the worker purges
    between batches; None writes records for the MongoDB sink connector instead.
    """
    structlog.contextvars.bind_contextvars(migration=settings.migration, process=process)
    log.info(start_event or f"{process}.start", settings=settings.masked())
    transformer = spec()
    health = HealthState(process, migration=settings.migration)
    with contextlib.ExitStack() as stack:
        stack.enter_context(serve_health(health, settings.metrics_host, settings.metrics_port))
        _ensure_topics(settings)
        if sink is not None:
            # Before any data is touched: tombstones must outlive every event a
            # replay could bring back (a bad config stops here, with both values).
            check_tombstone_retention(
                settings.tombstone_retention_s,
                [
                    topic_retention(settings.kafka_bootstrap, topic, security=settings.kafka_client)
                    for topic in (settings.changes_topic, settings.quarantine_topic)
                ],
            )
        client = connect(settings.mongo_uri.get_secret_value(), app=process)
        stack.callback(client.close)
        producer = AckedProducer(
            producer_config(
                settings.kafka_bootstrap, _client_id(f"{process}-quarantine"), settings.kafka_client
            )
        )
        stack.callback(producer.close)
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.consumer_group,
                _client_id(process),
                settings.kafka_client,
            )
        )
        output: DocumentSink
        if sink is None:
            output, housekeeping = _kafka_sink(settings, stack), None
        else:
            mongo = sink(settings, client)
            log.info("sink.guard", mode=mongo.guard)
            output, housekeeping = mongo, _purge(settings, mongo)
        worker = TransformWorker(
            settings.migration,
            settings.changes_topic,
            consumer,
            transformer,
            output,
            Quarantine(producer, settings.quarantine_topic),
            stop,
            batch_size=settings.batch_size,
            batch_timeout_s=settings.batch_timeout_s,
            health=health,
            maintenance=housekeeping,
            decode=decode,
            is_echo=is_echo,
        )
        health.beat("ok")
        worker.run()
        return worker


def _ensure_topics(settings: Settings) -> None:
    """The changes topic (SM_PARTITIONS) and the quarantine topic (one partition)."""
    for topic, partitions in (
        (settings.changes_topic, settings.partitions),
        (settings.quarantine_topic, 1),
    ):
        ensure_topic(settings.kafka_bootstrap, topic, partitions, security=settings.kafka_client)


def _kafka_sink(settings: Settings, stack: contextlib.ExitStack) -> DocumentSink:
    """SM_OUTPUT=kafka-sink-topic: records for the MongoDB sink connector (no tombstones)."""
    topic = settings.sink_topic or default_sink_topic(settings.migration)
    ensure_topic(
        settings.kafka_bootstrap, topic, settings.partitions, security=settings.kafka_client
    )
    producer = Producer(
        producer_config(settings.kafka_bootstrap, _client_id("sink"), settings.kafka_client)
    )
    stack.callback(producer.flush, 30)
    log.info("sink.kafka_topic", topic=topic)
    return KafkaTopicSink(producer, topic)


def _purge(settings: Settings, sink: MongoSink) -> Callable[[], None] | None:
    """The worker's housekeeping: forget tombstones past SM_TOMBSTONE_RETENTION_S (0: never)."""
    if settings.tombstone_retention_s == 0:
        return None  # tombstones kept forever

    def purge() -> None:
        purged = sink.purge_tombstones(settings.tombstone_retention_s)
        log.info("tombstones.purged", count=purged)

    return purge


def transform_decoder(settings: Settings) -> Callable[[bytes | None], events.ChangeEvent]:
    """Kafka value -> ChangeEvent for SM_INPUT_FORMAT."""
    if settings.input_format == "mongo-connector":
        return functools.partial(decode_connector_event, ns=settings.source)
    return events.decode
