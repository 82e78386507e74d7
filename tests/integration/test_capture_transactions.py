"""Capture and transactions: folded per document, never checkpointed inside; plain writes as before.

The stand-in has no multi-document transactions, so the transaction test feeds the
real tailer loop (real Kafka producer, real checkpoint collection) from a scripted
change stream whose events are shaped as MongoDB documents them; only the stream
is scripted. The single-write test runs on the stand-in's own change stream.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from bson import Int64, ObjectId, Timestamp
from confluent_kafka import Consumer, TopicPartition

from stream_migrator import events
from stream_migrator.capture import Capture, MongoCheckpointStore
from stream_migrator.kafka import AckedProducer, ensure_topic, producer_config
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import client_for, pipeline, wait_until_match

pytestmark = pytest.mark.integration


class ScriptedStream:
    """Replays events (dicts) and idle answers (``("idle", post_batch_token)``), then stops.

    The stop flag is set as the last item is handed out, as a SIGTERM would be.
    """

    def __init__(self, script: list[Any], stop: StopFlag) -> None:
        self._script = list(script)
        self._stop = stop
        self.resume_token: Any = {"_data": "8200000000"}

    def try_next(self) -> dict[str, Any] | None:
        item = self._script.pop(0)
        if not self._script:
            self._stop.set("script done")  # arrives while the last item is handled
        if isinstance(item, tuple):
            self.resume_token = item[1]
            return None
        # PyMongo's token mid-batch is the event's own; a batch's last event gives the
        # post-batch token, which the script models as a following idle answer.
        self.resume_token = item["_id"]
        return dict(item)


def _event(op: str, doc_id: Any, at: Timestamp, total: int | None = None) -> dict[str, Any]:
    change: dict[str, Any] = {
        "_id": {"_data": f"82{uuid.uuid4().hex[:16].upper()}"},
        "operationType": op,
        "clusterTime": at,
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": doc_id},
        "lsid": {"id": uuid.uuid4().bytes},
        "txnNumber": Int64(1),
    }
    if op != "delete":
        change["fullDocument"] = {"_id": doc_id, "cust_name": "c", "total": total}
    return change


def _read_topic(s: Settings) -> list[events.ChangeEvent]:
    """Every event in the changes topic, from its beginning to its current end."""
    consumer = Consumer(
        {"bootstrap.servers": s.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}"}
    )
    try:
        meta = consumer.list_topics(s.changes_topic, timeout=30).topics[s.changes_topic]
        ends: dict[int, int] = {}
        assignment = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(s.changes_topic, p), timeout=30
            )
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(s.changes_topic, p, low))
        consumer.assign(assignment)
        out: list[events.ChangeEvent] = []
        deadline = time.monotonic() + 30
        while any(
            consumer.position([TopicPartition(s.changes_topic, p)])[0].offset < e
            for p, e in ends.items()
        ):
            assert time.monotonic() < deadline, "could not read the changes topic"
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(events.decode(msg.value()))
        return out
    finally:
        consumer.close()


def _follow(s: Settings, script: list[Any]) -> tuple[Capture, dict[str, Any]]:
    """Run the tailer loop over ``script`` until it ends; returns capture and checkpoint."""
    ensure_topic(s.kafka_bootstrap, s.changes_topic, s.partitions)
    ensure_topic(s.kafka_bootstrap, s.quarantine_topic, 1)
    client = client_for(s)
    producer = AckedProducer(producer_config(s.kafka_bootstrap, "test-capture-txn"))
    store = MongoCheckpointStore(client, s.metadata_db, s.migration)
    stop = StopFlag()
    capture = Capture(s, client, producer, store, stop)
    try:
        capture._follow(ScriptedStream(script, stop), None)  # type: ignore[arg-type]
        return capture, store.load() or {}
    finally:
        producer.close()
        client.close()


def test_capture_transaction_emits_last_event_per_document(
    settings_kwargs: dict[str, Any],
) -> None:
    """insert+update, insert+delete of one document in a transaction: one event each in Kafka."""
    s = load_settings(**settings_kwargs)
    t1, t2 = Timestamp(1_800_000_000, 1), Timestamp(1_800_000_000, 2)
    a, b, c = ObjectId(), ObjectId(), ObjectId()
    script: list[Any] = [
        _event("insert", a, t1, 1),
        _event("insert", b, t2, 1),  # one transaction at t2 ...
        _event("update", b, t2, 2),
        _event("insert", c, t2, 1),
        _event("delete", c, t2),  # ... ends here
        ("idle", {"_data": "82pbrt"}),
    ]
    _, checkpoint = _follow(s, script)
    produced = [(e.doc_id, e.op, e.cluster_time) for e in _read_topic(s)]
    assert sorted(produced, key=str) == sorted(
        [
            (a, "insert", events.version_of(t1)),
            (b, "update", events.version_of(t2)),
            (c, "delete", events.version_of(t2)),
        ],
        key=str,
    )
    assert checkpoint["resume_token"] == {"_data": "82pbrt"}


def test_capture_stopped_inside_transaction_checkpoints_before_it(
    settings_kwargs: dict[str, Any],
) -> None:
    """A stop while a transaction's events are held saves the token before the transaction."""
    s = load_settings(**settings_kwargs)
    t1, t2 = Timestamp(1_800_000_000, 1), Timestamp(1_800_000_000, 2)
    d = ObjectId()
    before = _event("insert", ObjectId(), t1, 1)
    script: list[Any] = [before, _event("delete", d, t2), _event("insert", d, t2, 5)]
    capture, checkpoint = _follow(s, script)
    assert checkpoint["resume_token"] == before["_id"], "checkpoint inside the transaction"
    assert [e.doc_id for e in _read_topic(s)] == [before["documentKey"]["_id"]]
    assert capture.captured == 1


def test_capture_single_writes_all_arrive_unfolded(settings_kwargs: dict[str, Any]) -> None:
    """Plain writes, several to one document in quick succession, each reach the target."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    ids = [ObjectId() for _ in range(20)]
    with pipeline(s) as stages:
        deadline = time.monotonic() + 30
        while not client[s.metadata_db]["checkpoints"].find_one(
            {"_id": f"{s.migration}/capture", "snapshot.done": True}
        ):
            assert time.monotonic() < deadline, "snapshot of the empty source did not finish"
            time.sleep(0.1)
        for k, i in enumerate(ids):
            src.insert_one({"_id": i, "cust_name": f"c{k}", "total": k})
            src.update_one({"_id": i}, {"$set": {"total": k + 100}})
            if k % 4 == 0:
                src.delete_one({"_id": i})
            elif k % 4 == 1:
                src.delete_one({"_id": i})
                src.insert_one({"_id": i, "cust_name": "again", "total": -k})
        report = wait_until_match(s, timeout=60, stages=stages)
    assert report.source_count == 15
    capture: Capture = stages["capture"].result
    assert capture.folded == 0, "writes with their own cluster times were folded"
    client.close()
