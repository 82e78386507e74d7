"""Replaying the whole topic changes nothing: the version guard makes writes idempotent."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from bson import ObjectId
from bson.int64 import Int64
from confluent_kafka import Consumer

from stream_migrator.interfaces import TargetWrite
from stream_migrator.kafka import AckedProducer, consumer_config, ensure_topic, producer_config
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import load_settings
from stream_migrator.spec import get_spec
from stream_migrator.transform import MongoSink, TransformWorker
from stream_migrator.transform.cas_guard import CasGuard
from stream_migrator.transform.quarantine import Quarantine
from tests.integration.helpers import client_for, pipeline, wait_until_match

pytestmark = pytest.mark.integration


def test_replaying_topic_leaves_target_unchanged(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """A second consumer group reading the topic from offset 0 changes no target document."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    ids = [ObjectId() for _ in range(300)]
    src.insert_many([{"_id": i, "cust_name": "a", "total": 1} for i in ids])
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        for n, i in enumerate(ids[:100]):
            src.update_one({"_id": i}, {"$set": {"total": n}})
        src.delete_many({"_id": {"$in": ids[100:150]}})
        wait_until_match(s, stages=stages)
    before = {d["_id"]: d for d in tgt.find({})}

    stop = StopFlag()
    group = f"{s.consumer_group}-replay"
    consumer = Consumer(consumer_config(s.kafka_bootstrap, group, "replay"))
    producer = AckedProducer(producer_config(s.kafka_bootstrap, "replay-q"))
    worker = TransformWorker(
        s.migration,
        s.changes_topic,
        consumer,
        get_spec(s.spec),
        MongoSink(tgt, write_guard),
        Quarantine(producer, s.quarantine_topic),
        stop,
        batch_size=200,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while worker.lag != 0 or worker.stale == 0:
        assert time.monotonic() < deadline, f"replay did not finish (lag {worker.lag})"
        time.sleep(0.5)
    stop.set()
    thread.join(30)
    producer.close()
    after = {d["_id"]: d for d in tgt.find({})}
    assert after == before
    assert worker.stale > 0  # the replayed events were refused by the version guard
    client.close()


def test_older_event_never_overwrites_newer(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """Both guard modes: an older upsert or delete after a newer write is stale."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    sink = MongoSink(tgt, write_guard)
    oid = ObjectId()
    assert sink.apply([TargetWrite(oid, 20, {"state": "new"})]).written == 1
    old = sink.apply([TargetWrite(oid, 10, {"state": "old"})])
    assert old.stale == 1
    assert old.written == 0
    assert sink.apply([TargetWrite(oid, 15, None)]).stale == 1  # guarded delete: no match
    doc = tgt.find_one({"_id": oid})
    assert doc is not None
    assert doc["state"] == "new"
    assert doc["_sm"]["v"] == 20
    assert sink.apply([TargetWrite(oid, 20, {"state": "replayed"})]).stale == 1  # same version
    assert sink.apply([TargetWrite(oid, 21, None)]).written == 1
    assert tgt.find_one({"_id": oid}) is None
    assert sink.apply([TargetWrite(ObjectId(), 5, None)]).stale == 1  # nothing to delete
    client.close()


def test_late_insert_after_delete_does_not_resurrect(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """A delete leaves a tombstone; a replayed older insert of that _id is refused."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    sink = MongoSink(tgt, write_guard)
    oid, never_seen = ObjectId(), ObjectId()
    sink.apply([TargetWrite(oid, 10, {"state": "v10"})])
    assert sink.apply([TargetWrite(oid, 30, None)]).written == 1
    late = sink.apply([TargetWrite(oid, 20, {"state": "v20-replayed"})])
    assert late.stale == 1
    assert tgt.find_one({"_id": oid}) is None
    # A delete of a document the target never saw still buries it.
    sink.apply([TargetWrite(never_seen, 50, None)])
    assert sink.apply([TargetWrite(never_seen, 40, {"x": 1})]).stale == 1
    assert tgt.find_one({"_id": never_seen}) is None
    # A genuinely newer insert after the delete is applied (the _id was reused).
    assert sink.apply([TargetWrite(oid, 31, {"state": "reborn"})]).written == 1
    doc = tgt.find_one({"_id": oid})
    assert doc is not None
    assert doc["state"] == "reborn"
    tombstone = sink.tombstones.find_one({"_id": oid})
    assert tombstone is not None
    assert tombstone["v"] == 30
    assert sink.purge_tombstones(retention_s=3600) == 0
    assert sink.purge_tombstones(retention_s=0) == 2
    assert sink.tombstones.count_documents({}) == 0
    client.close()


class _RacingCas(CasGuard):
    """The cas guard with another writer landing between its version read and its write."""

    def __init__(self, coll: Any, racer: Any) -> None:
        super().__init__(coll, skip_equal=False, mark_echoes=False)
        self._racer = racer
        self.reads = 0

    def _current(self, batch: list[TargetWrite]) -> dict[Any, tuple[Any, bool]]:
        seen = super()._current(batch)
        self.reads += 1
        if self.reads == 1:
            self._racer()
        return seen


class _RacingSink(MongoSink):
    """A cas sink whose guard races another writer (:class:`_RacingCas`)."""

    def __init__(self, coll: Any, racer: Any) -> None:
        super().__init__(coll, "cas")
        self._racing = _RacingCas(self._coll, racer)
        self._cas = self._racing

    @property
    def reads(self) -> int:
        return self._racing.reads


@pytest.mark.parametrize("op", ["replace", "delete", "insert"])
def test_cas_guard_keeps_a_newer_write_made_between_read_and_write(
    settings_kwargs: dict[str, Any], op: str
) -> None:
    """An application write (newer version) inside the sink's read->write window survives."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    oid = ObjectId()
    app_doc = {"_id": oid, "state": "app", "_sm": {"v": Int64((1 << 62) | 0xFFFFFFFF)}}
    if op != "insert":
        MongoSink(tgt, "cas").apply([TargetWrite(oid, 10, {"state": "v10"})])
    sink = _RacingSink(tgt, lambda: tgt.replace_one({"_id": oid}, app_doc, upsert=True))
    result = sink.apply([TargetWrite(oid, 20, None if op == "delete" else {"state": "v20"})])
    assert tgt.find_one({"_id": oid}) == app_doc
    assert (result.written, result.stale) == (0, 1)
    assert sink.reads >= 2  # the lost compare-and-set was read and decided again
    client.close()


def test_cas_guard_writes_after_losing_a_race_to_an_older_writer(
    settings_kwargs: dict[str, Any],
) -> None:
    """A zombie writing an older version in the window makes the sink retry, then win."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    oid = ObjectId()
    MongoSink(tgt, "cas").apply([TargetWrite(oid, 10, {"state": "v10"})])
    zombie = MongoSink(tgt, "cas")
    sink = _RacingSink(tgt, lambda: zombie.apply([TargetWrite(oid, 15, {"state": "v15"})]))
    result = sink.apply([TargetWrite(oid, 20, {"state": "v20"})])
    doc = tgt.find_one({"_id": oid})
    assert doc is not None
    assert (doc["state"], doc["_sm"]["v"]) == ("v20", 20)
    assert (result.written, result.stale) == (1, 0)
    assert sink.reads >= 2  # lost the first compare-and-set, decided again
    assert "sm_cas" in tgt.index_information()
    client.close()


def test_a_delete_replayed_after_a_crash_between_tombstone_and_delete_runs(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """The tombstone is written first; if the process dies before the delete, the replay deletes.

    Found by the SIGKILL tests: the replayed delete (same version as its tombstone) was
    dropped as "already buried", so the document stayed in the target for good.
    """
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    sink = MongoSink(tgt, write_guard)
    oid = ObjectId()
    sink.apply([TargetWrite(oid, 10, {"state": "v10"})])
    delete = TargetWrite(oid, 20, None)
    sink._bury([delete])  # the crash: tombstone written, delete never sent
    assert tgt.find_one({"_id": oid}) is not None
    replay = sink.apply([delete])
    assert (replay.written, replay.stale) == (1, 0)
    assert tgt.find_one({"_id": oid}) is None
    again = sink.apply([delete, TargetWrite(oid, 20, {"state": "same version upsert"})])
    assert tgt.find_one({"_id": oid}) is None  # nothing resurrects it
    assert again.written == 0
    client.close()


def test_unversioned_target_document_is_older_than_any_event(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """Both guard modes: a document without ``_sm.v`` is replaced and deleted like an older one.

    On MongoDB a comparison (``_sm.v: {$lt: v}``) never matches a missing field, so the
    old filter guard could not touch an application's document (the old collection
    under the reverse stream, or a target document an unstamped write replaced).
    """
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    sink = MongoSink(tgt, write_guard)
    bare, other, no_meta, null_v, text_v = (ObjectId() for _ in range(5))
    tgt.insert_many(
        [
            {"_id": bare, "state": "app"},
            {"_id": other, "state": "app"},
            {"_id": no_meta, "state": "app", "_sm": {"echo": b"x"}},
            {"_id": null_v, "state": "app", "_sm": {"v": None}},
            {"_id": text_v, "state": "app", "_sm": {"v": "not a number"}},  # $gte: no match
        ]
    )
    replaced = sink.apply(
        [
            TargetWrite(bare, 10, {"state": "v10"}),
            TargetWrite(no_meta, 10, {"state": "v10"}),
            TargetWrite(null_v, 10, {"state": "v10"}),
            TargetWrite(text_v, 10, {"state": "v10"}),
        ]
    )
    assert (replaced.written, replaced.stale, replaced.failed) == (4, 0, [])
    for key in (bare, no_meta, null_v, text_v):
        doc = tgt.find_one({"_id": key})
        assert doc is not None
        assert (doc["state"], doc["_sm"]["v"]) == ("v10", 10)
    deleted = sink.apply([TargetWrite(other, 10, None)])
    assert (deleted.written, deleted.stale) == (1, 0)
    assert tgt.find_one({"_id": other}) is None
    assert sink.apply([TargetWrite(bare, 5, {"state": "older"})]).stale == 1  # now versioned
    client.close()


def test_unique_secondary_index_conflict_is_failed_not_stale(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """Both guard modes: a duplicate key on another unique index is a failed write with a reason.

    Only a duplicate ``_id`` means "lost the race / stale"; a collision on, say, a
    unique order number is a real conflict the worker must quarantine.
    """
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    tgt.create_index("order_no", unique=True, name="order_no_unique")
    sink = MongoSink(tgt, write_guard)
    first, second, third = ObjectId(), ObjectId(), ObjectId()
    assert sink.apply([TargetWrite(first, 10, {"order_no": "A-1"})]).written == 1
    assert sink.apply([TargetWrite(third, 10, {"order_no": "A-3"})]).written == 1
    # An insert and a replace of an existing document, both colliding with "A-1".
    clash = [
        TargetWrite(second, 11, {"order_no": "A-1"}),
        TargetWrite(third, 12, {"order_no": "A-1"}),
    ]
    result = sink.apply(clash)
    assert (result.written, result.stale) == (0, 0)
    assert sorted(w.doc_id for w, _ in result.failed) == sorted([second, third])
    for _, reason in result.failed:
        assert "order_no_unique" in reason, reason
        assert "A-1" in reason, reason
    assert tgt.find_one({"_id": second}) is None
    assert (tgt.find_one({"_id": third}) or {}).get("order_no") == "A-3"
    assert (tgt.find_one({"_id": first}) or {}).get("order_no") == "A-1"
    # The _id race is still stale, not failed.
    replay = sink.apply([TargetWrite(first, 9, {"order_no": "A-1"})])
    assert (replay.written, replay.stale, replay.failed) == (0, 1, [])
    client.close()


def test_unique_index_collision_in_the_pipeline_goes_to_quarantine(
    settings_kwargs: dict[str, Any], write_guard: Any
) -> None:
    """Both guard modes: two source documents colliding on a unique target index.

    One lands; the other is quarantined (stage ``write``) with a reason naming the
    index and the key, and the partition keeps moving (later documents land).
    """
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    tgt.create_index("customer.name", unique=True, name="customer_name_unique")
    twins = [{"_id": ObjectId(), "cust_name": "twin", "total": 1} for _ in range(2)]
    others = [{"_id": ObjectId(), "cust_name": f"c{i}", "total": 1} for i in range(5)]
    src.insert_many([*twins, *others])
    ensure_topic(s.kafka_bootstrap, s.quarantine_topic, 1)  # to subscribe before it is used
    consumer = Consumer(consumer_config(s.kafka_bootstrap, f"{s.migration}-q", "q-reader"))
    consumer.subscribe([s.quarantine_topic])
    headers: list[dict[str, str]] = []
    try:
        with pipeline(s):
            deadline = time.monotonic() + 60
            while not headers or tgt.count_documents({}) < 1 + len(others):
                assert time.monotonic() < deadline, f"quarantine holds {headers}"
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    raw = msg.headers() or []  # produced as a list of (name, bytes)
                    pairs = raw.items() if isinstance(raw, dict) else raw
                    headers.append(
                        {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}
                    )
    finally:
        consumer.close()
    landed = [d["_id"] for d in tgt.find({"customer.name": "twin"})]
    assert len(landed) == 1
    assert {h["sm.stage"] for h in headers} == {"write"}
    reason = headers[0]["sm.reason"]
    assert "customer_name_unique" in reason, reason
    assert "twin" in reason, reason
    assert tgt.count_documents({}) == 1 + len(others)
    client.close()


class _InterleavedFilterSink(MongoSink):
    """A filter sink whose first attempt misses like a guarded upsert racing an insert.

    MongoDB evaluates a guarded upsert's filter, finds no document, then inserts; a
    concurrent insert of the same _id (an OLDER version, by a zombie worker) landing in
    between makes the insert fail duplicate key on _id although the guard would match
    it. The server's interleaving cannot be forced from outside, so the first round's
    filter is made to miss the document that is there, which is what the race does.
    """

    def __init__(self, coll: Any) -> None:
        super().__init__(coll, "filter")
        self.rounds = 0

    def _guard_filter(self, w: TargetWrite) -> dict[str, Any]:
        self.rounds += 1
        guard = super()._guard_filter(w)
        return {**guard, "_sm.no_such_field": {"$exists": True}} if self.rounds == 1 else guard


def test_filter_guard_retries_an_upsert_that_lost_an_insert_race(
    settings_kwargs: dict[str, Any],
) -> None:
    """A duplicate _id on a guarded upsert is sent once more: an older racer is replaced."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    oid = ObjectId()
    MongoSink(tgt, "filter").apply([TargetWrite(oid, 15, {"state": "zombie v15"})])
    sink = _InterleavedFilterSink(tgt)
    result = sink.apply([TargetWrite(oid, 20, {"state": "v20"})])
    doc = tgt.find_one({"_id": oid})
    assert doc is not None
    assert (doc["state"], doc["_sm"]["v"]) == ("v20", 20)
    assert (result.written, result.stale) == (1, 0)
    assert sink.rounds == 2
    # A write that really is stale stays stale after its second attempt.
    again = _InterleavedFilterSink(tgt).apply([TargetWrite(oid, 18, {"state": "v18"})])
    assert (again.written, again.stale) == (0, 1)
    assert (tgt.find_one({"_id": oid}) or {})["state"] == "v20"
    client.close()
