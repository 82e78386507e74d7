"""Real Kafka Connect (connect-runtime 4.3.1 + mongo-kafka-connect 2.0.1) with connectors/."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.demo.data import v1_order
from stream_migrator.errors import InfraError
from stream_migrator.infra.connect import ConnectWorker, connect_jars, render_connector
from stream_migrator.kafka import ensure_topic
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import META_FIELD
from stream_migrator.transform.kafka_sink import default_sink_topic
from tests import backends
from tests.integration.helpers import client_for, pipeline, wait_until_match

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def connect(backend: backends.Backend) -> Iterator[ConnectWorker]:
    """One standalone Connect worker for this module, on the session's Kafka."""
    try:
        connect_jars(quiet=True)
    except InfraError as exc:  # `make jars` resolves them before the tests: a failure
        pytest.fail(f"Kafka Connect jars cannot be resolved from Maven Central: {exc}")
    # One fixed state directory, wiped at start: its connect.log survives a failed run.
    state = backends.REPO / ".sm" / "test-connect"
    shutil.rmtree(state, ignore_errors=True)
    worker = ConnectWorker(backend.kafka_bootstrap, state)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _order(i: int, **extra: Any) -> dict[str, Any]:
    """A valid v1 order (the demo's generator keeps up with the spec and its schema)."""
    return {**v1_order(random.Random(i), i), "cust_name": f"c{i}", **extra}


def _deploy(connect: ConnectWorker, kind: str, **values: Any) -> str:
    connector = render_connector(kind, **values)
    connect.deploy(connector)
    connect.wait_running(connector["name"])
    return str(connector["name"])


def _deploy_sink(connect: ConnectWorker, s: Settings) -> str:
    topic = default_sink_topic(s.migration)
    ensure_topic(s.kafka_bootstrap, topic, s.partitions)
    db, coll = s.split_ns(s.target)
    return _deploy(
        connect,
        "mongo-sink",
        NAME=f"sink-{s.migration}",
        MONGO_URI=s.mongo_uri.get_secret_value(),
        SINK_TOPIC=topic,
        TARGET_DB=db,
        TARGET_COLLECTION=coll,
    )


def _deploy_source(connect: ConnectWorker, s: Settings) -> str:
    ensure_topic(s.kafka_bootstrap, s.changes_topic, s.partitions)
    db, coll = s.split_ns(s.source)
    return _deploy(
        connect,
        "mongo-source",
        NAME=f"source-{s.migration}",
        MONGO_URI=s.mongo_uri.get_secret_value(),
        SOURCE_DB=db,
        SOURCE_COLLECTION=coll,
        CHANGES_TOPIC=s.changes_topic,
    )


def _live_changes(s: Settings, existing: list[dict[str, Any]]) -> dict[str, Any]:
    """Insert, update, replace and delete on the source; returns the new order."""
    client = client_for(s)
    try:
        src = client[s.split_ns(s.source)[0]]["orders"]
        new = _order(1000, status="paid")
        src.insert_one(new)
        src.update_one({"_id": existing[0]["_id"]}, {"$set": {"total": "99.50"}})
        replacement = {k: v for k, v in _order(2000).items() if k != "_id"}
        src.replace_one({"_id": existing[1]["_id"]}, {**replacement, "cust_name": "R"})
        src.delete_one({"_id": existing[2]["_id"]})
        return new
    finally:
        client.close()


def _assert_target(s: Settings, existing: list[dict[str, Any]], new: dict[str, Any]) -> None:
    client = client_for(s)
    try:
        tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
        got = tgt.find_one({"_id": new["_id"]})
        assert got is not None
        assert got["customer"] == {"name": "c1000"}
        street, city, zip_code = (part.strip() for part in new["address"].split(","))
        assert got["address"] == {"street": street, "city": city, "zip": zip_code}
        assert isinstance(got[META_FIELD]["v"], Int64)
        updated = tgt.find_one({"_id": existing[0]["_id"]})
        assert updated is not None
        assert updated["total"] == Decimal128(Decimal("99.50"))
        replaced = tgt.find_one({"_id": existing[1]["_id"]})
        assert replaced is not None
        assert replaced["customer"] == {"name": "R"}
        assert replaced["seq"] == 2000
        assert tgt.find_one({"_id": existing[2]["_id"]}) is None
    finally:
        client.close()


def _seed(s: Settings, count: int) -> list[dict[str, Any]]:
    client = client_for(s)
    try:
        docs = [_order(i) for i in range(count)]
        client[s.split_ns(s.source)[0]]["orders"].insert_many(docs)
        return docs
    finally:
        client.close()


def test_sink_connector_applies_worker_output_to_target(
    connect: ConnectWorker, settings_kwargs: dict[str, Any]
) -> None:
    """capture -> worker (output=kafka-sink-topic) -> MongoDB sink connector -> target."""
    s = load_settings(**settings_kwargs, output="kafka-sink-topic")
    existing = _seed(s, 50)
    sink = _deploy_sink(connect, s)
    try:
        with pipeline(s) as stages:
            wait_until_match(s, stages=stages, timeout=60)
            new = _live_changes(s, existing)
            wait_until_match(s, stages=stages, timeout=60)
        _assert_target(s, existing, new)
        # The worker never wrote the target itself: no tombstone side collection exists.
        client = client_for(s)
        names = client[s.split_ns(s.target)[0]].list_collection_names()
        client.close()
        assert not [n for n in names if n.endswith("sm_tombstones")]
        assert connect.status(sink)["tasks"][0]["state"] == "RUNNING"
    finally:
        connect.delete(sink)


def test_source_connector_feeds_worker_through_version_guard(
    connect: ConnectWorker, settings_kwargs: dict[str, Any]
) -> None:
    """MongoDB source connector (copy_existing + stream) -> worker (mongo-connector) -> target."""
    s = load_settings(**settings_kwargs, input_format="mongo-connector")
    existing = _seed(s, 50)
    source = _deploy_source(connect, s)
    try:
        with pipeline(s, capture=False) as stages:
            wait_until_match(s, stages=stages, timeout=60)
            new = _live_changes(s, existing)
            wait_until_match(s, stages=stages, timeout=60)
        _assert_target(s, existing, new)
    finally:
        connect.delete(source)


def test_both_connectors_carry_migration_end_to_end(
    connect: ConnectWorker, settings_kwargs: dict[str, Any]
) -> None:
    """Source connector -> worker -> sink connector: no stream-migrator reader or writer."""
    # One partition: mongo-java-server keys update events by their update spec rather
    # than {_id}, so with several partitions one document's changes could be split
    # across them, and the sink path has no version guard to undo a reordering.
    kwargs = {**settings_kwargs, "partitions": 1}
    s = load_settings(**kwargs, input_format="mongo-connector", output="kafka-sink-topic")
    existing = _seed(s, 30)
    sink = _deploy_sink(connect, s)
    source = _deploy_source(connect, s)
    try:
        with pipeline(s, capture=False) as stages:
            wait_until_match(s, stages=stages, timeout=60)
            new = _live_changes(s, existing)
            wait_until_match(s, stages=stages, timeout=60)
        _assert_target(s, existing, new)
    finally:
        connect.delete(source)
        connect.delete(sink)
