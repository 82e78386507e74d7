"""Wiring: builds each long-running process from settings. Nothing else lives here."""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, Producer
from pymongo import MongoClient

from stream_migrator import events
from stream_migrator.capture import Capture, MongoCheckpointStore
from stream_migrator.capture.positions import apply_action
from stream_migrator.capture.split_events import supports_split_events
from stream_migrator.capture.throttle import SnapshotThrottle
from stream_migrator.interfaces import DocumentSink
from stream_migrator.kafka import (
    AckedProducer,
    check_tombstone_retention,
    consumer_config,
    ensure_topic,
    group_lag,
    producer_config,
    topic_retention,
)
from stream_migrator.mongo import connect
from stream_migrator.observability import HealthServer, HealthState, get_logger
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec
from stream_migrator.transform import MongoSink, TransformWorker
from stream_migrator.transform.formats import decode_connector_event
from stream_migrator.transform.kafka_sink import KafkaTopicSink, default_sink_topic
from stream_migrator.transform.quarantine import Quarantine
from stream_migrator.transform.sink import detect_guard_mode, is_marked_echo

log = get_logger("app")


def _client_id(role: str) -> str:
    return f"sm-{role}-{socket.gethostname()}"


def run_capture(settings: Settings, stop: StopFlag) -> Capture:
    """Run capture until ``stop`` is set; returns the finished Capture (for its counters)."""
    structlog.contextvars.bind_contextvars(migration=settings.migration, process="capture")
    log.info("capture.start", settings=settings.masked())
    health = HealthState("capture", migration=settings.migration)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            HealthServer(health, settings.metrics_host, settings.metrics_port)
        )
        log.info("http.listening", port=server.port, paths=["/metrics", "/healthz", "/readyz"])
        ensure_topic(
            settings.kafka_bootstrap,
            settings.changes_topic,
            settings.partitions,
            security=settings.kafka_client,
        )
        client = connect(settings.mongo_uri.get_secret_value(), app="capture")
        stack.callback(client.close)
        producer = AckedProducer(
            producer_config(settings.kafka_bootstrap, _client_id("capture"), settings.kafka_client)
        )
        stack.callback(producer.close)
        ensure_topic(
            settings.kafka_bootstrap, settings.quarantine_topic, 1, security=settings.kafka_client
        )
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


def apply_capture_action(
    settings: Settings,
    *,
    resume_after: str | None = None,
    start_at: str | None = None,
    resnapshot: bool = False,
) -> str | None:
    """Apply an operator's --resume-after / --start-at / --resnapshot before capture starts."""
    client = connect(settings.mongo_uri.get_secret_value(), app="capture-action")
    try:
        store = MongoCheckpointStore(client, settings.metadata_db, settings.migration)
        what = apply_action(
            store,
            client[settings.metadata_db]["capture_actions"],
            settings.migration,
            resume_after=resume_after,
            start_at=start_at,
            resnapshot=resnapshot,
        )
    finally:
        client.close()
    if what:
        log.warning("capture.operator_action", action=what)
    return what


def run_transform(settings: Settings, stop: StopFlag) -> TransformWorker:
    """Run one transform worker until ``stop`` is set."""
    structlog.contextvars.bind_contextvars(migration=settings.migration, process="transform")
    log.info("transform.start", settings=settings.masked())
    spec = get_spec(settings.spec, settings.hook_policy)
    health = HealthState("transform", migration=settings.migration)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            HealthServer(health, settings.metrics_host, settings.metrics_port)
        )
        log.info("http.listening", port=server.port, paths=["/metrics", "/healthz", "/readyz"])
        ensure_topic(
            settings.kafka_bootstrap,
            settings.changes_topic,
            settings.partitions,
            security=settings.kafka_client,
        )
        ensure_topic(
            settings.kafka_bootstrap, settings.quarantine_topic, 1, security=settings.kafka_client
        )
        if settings.output == "mongodb":
            # Before any data is touched: tombstones must outlive every event a
            # replay could bring back (a bad config stops here, with both values).
            check_tombstone_retention(
                settings.tombstone_retention_s,
                [
                    topic_retention(settings.kafka_bootstrap, topic, security=settings.kafka_client)
                    for topic in (settings.changes_topic, settings.quarantine_topic)
                ],
            )
        client = connect(settings.mongo_uri.get_secret_value(), app="transform")
        stack.callback(client.close)
        producer = AckedProducer(
            producer_config(
                settings.kafka_bootstrap, _client_id("quarantine"), settings.kafka_client
            )
        )
        stack.callback(producer.close)
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.consumer_group,
                _client_id("transform"),
                settings.kafka_client,
            )
        )
        sink, purge = _transform_sink(settings, client, stack)
        worker = TransformWorker(
            settings.migration,
            settings.changes_topic,
            consumer,
            spec,
            sink,
            Quarantine(producer, settings.quarantine_topic),
            stop,
            batch_size=settings.batch_size,
            batch_timeout_s=settings.batch_timeout_s,
            health=health,
            maintenance=purge,
            decode=_transform_decoder(settings),
            # During a rollout the reverse stream writes to the source; what it wrote,
            # unchanged since, is its echo and must not travel forward again.
            is_echo=lambda event: is_marked_echo(event.document),
        )
        health.beat("ok")
        worker.run()
        return worker


def _transform_sink(
    settings: Settings, client: MongoClient[dict[str, Any]], stack: contextlib.ExitStack
) -> tuple[DocumentSink, Callable[[], None] | None]:
    """The worker's output (SM_OUTPUT) and its housekeeping, if any."""
    if settings.output == "kafka-sink-topic":
        topic = settings.sink_topic or default_sink_topic(settings.migration)
        ensure_topic(
            settings.kafka_bootstrap, topic, settings.partitions, security=settings.kafka_client
        )
        producer = Producer(
            producer_config(settings.kafka_bootstrap, _client_id("sink"), settings.kafka_client)
        )
        stack.callback(producer.flush, 30)
        log.info("sink.kafka_topic", topic=topic)
        return KafkaTopicSink(producer, topic), None
    db, coll = settings.split_ns(settings.target)
    guard = detect_guard_mode(client) if settings.write_guard == "auto" else settings.write_guard
    log.info("sink.guard", mode=guard)
    sink = MongoSink(client[db][coll], guard)
    if settings.tombstone_retention_s == 0:
        return sink, None  # tombstones kept forever

    def purge() -> None:
        purged = sink.purge_tombstones(settings.tombstone_retention_s)
        log.info("tombstones.purged", count=purged)

    return sink, purge


def _transform_decoder(settings: Settings) -> Callable[[bytes | None], events.ChangeEvent]:
    """Kafka value -> ChangeEvent for SM_INPUT_FORMAT."""
    if settings.input_format == "mongo-connector":
        return functools.partial(decode_connector_event, ns=settings.source)
    return events.decode
