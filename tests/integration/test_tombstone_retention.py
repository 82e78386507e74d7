"""The worker checks SM_TOMBSTONE_RETENTION_S against the real topics' retention at start."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from bson import ObjectId
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream_migrator.app import run_transform
from stream_migrator.errors import ConfigError, InfraError
from stream_migrator.kafka_retention import topic_retention
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import cli, client_for, pipeline, settings_env, wait_until_match

pytestmark = pytest.mark.integration


def _changes_topic(s: Settings, **config: str) -> None:
    """Create the changes and quarantine topics up front with ``config`` (ensure_topic keeps them).

    Both: a replay from either could bring an old insert back, so the worker checks both.
    """
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    topics = [
        NewTopic(s.changes_topic, num_partitions=s.partitions, replication_factor=-1),
        NewTopic(s.quarantine_topic, num_partitions=1, replication_factor=-1),
    ]
    for topic in topics:
        topic.config = config
    for future in admin.create_topics(topics, request_timeout=30).values():
        future.result(timeout=30)


def test_topic_retention_reads_the_real_topic_config(settings_kwargs: dict[str, Any]) -> None:
    """retention.ms, segment.ms and cleanup.policy come from describe_configs of the topic."""
    s = load_settings(**settings_kwargs)
    _changes_topic(s, **{"retention.ms": "3600000", "segment.ms": "600000"})
    got = topic_retention(s.kafka_bootstrap, s.changes_topic)
    assert (got.retention_ms, got.segment_ms, got.cleanup_policy) == (3_600_000, 600_000, "delete")
    assert got.longest_ms == 4_200_000


def test_topic_retention_waits_for_a_topic_being_created(settings_kwargs: dict[str, Any]) -> None:
    """A topic another process is creating (capture starting beside the worker) is waited for.

    Before, the worker died at start with UNKNOWN_TOPIC_OR_PART when its describe_configs
    ran before the topic was known; a topic that never appears is still an InfraError.
    """
    s = load_settings(**settings_kwargs)
    creator = threading.Timer(1.0, lambda: _changes_topic(s, **{"retention.ms": "7200000"}))
    creator.start()
    try:
        got = topic_retention(s.kafka_bootstrap, s.changes_topic, timeout=30)
    finally:
        creator.join()
    assert got.retention_ms == 7_200_000
    with pytest.raises(InfraError, match=r"UNKNOWN_TOPIC_OR_PART|Unknown topic"):
        topic_retention(s.kafka_bootstrap, f"{s.changes_topic}.never", timeout=2)


def test_worker_refuses_tombstone_retention_shorter_than_topic(
    settings_kwargs: dict[str, Any],
) -> None:
    """`transform` exits 2 before touching data, naming both values and the setting."""
    s = load_settings(**{**settings_kwargs, "tombstone_retention_s": 3600})
    _changes_topic(s, **{"retention.ms": "3600000", "segment.ms": "600000"})
    client = client_for(s)
    db, coll = s.split_ns(s.target)
    client[s.split_ns(s.source)[0]]["orders"].insert_one({"_id": ObjectId(), "cust_name": "a"})
    out = cli("transform", env=settings_env(s), timeout=90)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "configuration error" in out.stderr
    assert "SM_TOMBSTONE_RETENTION_S=3600" in out.stderr
    assert "retention.ms=3600000" in out.stderr
    assert s.changes_topic in out.stderr
    assert "transform.stopped" not in out.stdout  # it never started consuming
    assert coll not in client[db].list_collection_names()  # nor wrote the target
    client.close()


def test_worker_refuses_purging_tombstones_of_a_forever_topic(
    settings_kwargs: dict[str, Any],
) -> None:
    """retention.ms=-1 keeps events forever: any finite tombstone retention is refused."""
    s = load_settings(**settings_kwargs)
    _changes_topic(s, **{"retention.ms": "-1"})
    with pytest.raises(ConfigError, match="keeps its events forever") as info:
        run_transform(s, StopFlag())
    assert "SM_TOMBSTONE_RETENTION_S=0" in str(info.value)


def test_worker_runs_with_tombstones_forever_on_a_forever_topic(
    settings_kwargs: dict[str, Any],
) -> None:
    """SM_TOMBSTONE_RETENTION_S=0 (no purge) fits a topic with retention.ms=-1; data flows."""
    s = load_settings(**{**settings_kwargs, "tombstone_retention_s": 0})
    _changes_topic(s, **{"retention.ms": "-1"})
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].insert_one(
        {"_id": ObjectId(), "cust_name": "a", "total": 1}
    )
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
    client.close()


def test_worker_runs_when_tombstones_outlive_the_topic(settings_kwargs: dict[str, Any]) -> None:
    """A tombstone retention above retention.ms + segment.ms starts and migrates."""
    s = load_settings(**{**settings_kwargs, "tombstone_retention_s": 4201})
    _changes_topic(s, **{"retention.ms": "3600000", "segment.ms": "600000"})
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].insert_one(
        {"_id": ObjectId(), "cust_name": "a", "total": 1}
    )
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
    client.close()
