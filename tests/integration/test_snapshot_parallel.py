"""Parallel snapshot on the real servers: mixed-type ids copied once, resumed per range."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import bson
import pytest
from bson import Decimal128, Int64, MaxKey, MinKey, ObjectId
from confluent_kafka import Consumer, TopicPartition
from pymongo.collection import Collection

from stream_migrator import events
from stream_migrator.app import run_capture
from stream_migrator.capture import tailer
from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.demo.data import v1_order
from stream_migrator.id_order import is_split_point, range_id_filters
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import StageThread, client_for, pipeline, wait_until_match

pytestmark = pytest.mark.integration

Doc = dict[str, Any]


def mixed_ids(n: int, *, target_valid: bool = True) -> list[Any]:
    """``n`` distinct _ids of several BSON types, shuffled, for a snapshot to split and cover.

    ``target_valid``: only the types the orders.v2 schema takes for ``_id`` (ints, Int64s,
    strings, ObjectIds), so the whole pipeline can run; else doubles and sub-documents too.
    """
    makers: list[Callable[[int], Any]] = [
        lambda k: k * 6,
        lambda k: Int64(k * 6 + 1),
        lambda k: f"s{k:06}",
        lambda k: ObjectId(),
    ]
    if not target_valid:
        makers += [lambda k: k * 6 + 0.5, lambda k: {"region": k % 7, "n": k}]
    ids = [makers[k % len(makers)](k) for k in range(n)]
    random.Random(n).shuffle(ids)
    return ids


def seed(s: Settings, ids: list[Any]) -> Collection[Doc]:
    """v1 orders (valid for the built-in spec) under the given _ids."""
    client = client_for(s)
    coll = client[s.split_ns(s.source)[0]]["orders"]
    rng = random.Random(3)
    docs = []
    for k, i in enumerate(ids):
        doc = v1_order(rng, k)
        doc["_id"] = i
        docs.append(doc)
    coll.insert_many(docs)
    return coll


def checkpoint(s: Settings) -> Doc:
    client = client_for(s)
    try:
        return (
            client[s.metadata_db]["checkpoints"].find_one({"_id": f"{s.migration}/capture"}) or {}
        )
    finally:
        client.close()


def topic_keys(s: Settings, timeout: float = 60) -> Counter[bytes]:
    """How often each key is in the change topic, read from its start to its end now."""
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": f"{s.migration}-count",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(s.changes_topic, timeout=10).topics[s.changes_topic]
        parts = [TopicPartition(s.changes_topic, p, 0) for p in meta.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        consumer.assign(parts)
        keys: Counter[bytes] = Counter()
        deadline = time.monotonic() + timeout
        while sum(keys.values()) < sum(ends.values()):
            assert time.monotonic() < deadline, f"read {sum(keys.values())} of {ends}"
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is None and msg.offset() < ends[msg.partition()]:
                    keys[msg.key()] += 1
        return keys
    finally:
        consumer.close()


_SERVER_IDS: list[Any] = [
    MinKey(),
    None,
    float("nan"),
    -3,
    1,
    2.5,
    Int64(7),
    Decimal128("8.5"),
    "a",
    "b",
    {"a": 1},
    {"a": 2},
    b"\x01",
    ObjectId("65a000000000000000000001"),
    ObjectId("65a000000000000000000002"),
    False,
    True,
    MaxKey(),
]


def test_range_filters_cover_every_id_once_on_the_server(settings_kwargs: dict[str, Any]) -> None:
    """Any one or two split points: the ranges' queries return each stored _id once."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    coll = client[s.split_ns(s.source)[0]]["typed"]
    coll.insert_many([{"_id": i} for i in _SERVER_IDS])
    stored = sorted(repr(d["_id"]) for d in coll.find())
    points = [d["_id"] for d in coll.find().sort("_id", 1) if is_split_point(d["_id"])]
    for k in (1, 2):
        for cut in itertools.combinations(points, k):
            edges = [None, *cut, None]
            got = [
                repr(d["_id"])
                for lo, hi in itertools.pairwise(edges)
                for q in range_id_filters(lo, hi)
                for d in coll.find(q).sort("_id", 1)
            ]
            assert sorted(got) == stored, cut
    client.close()


def test_parallel_snapshot_copies_mixed_type_ids_once(settings_kwargs: dict[str, Any]) -> None:
    """Four ranges over six id types (doubles, documents too): each document once in the topic."""
    s = load_settings(**{**settings_kwargs, "snapshot_parallelism": 4})
    ids = mixed_ids(6_000, target_valid=False)
    source = seed(s, ids)
    capture = StageThread(run_capture, s)
    capture.start()
    deadline = time.monotonic() + 120
    while not (checkpoint(s).get("snapshot") or {}).get("done"):
        assert capture.error is None, capture.error
        assert time.monotonic() < deadline, "the snapshot did not finish"
        time.sleep(0.1)
    assert capture.stop().captured == len(ids)
    snapshot = checkpoint(s)["snapshot"]
    ranges = snapshot["ranges"]
    assert len(ranges) == 4, ranges
    assert all(r["done"] for r in ranges)
    assert all(r["copied"] > 0 for r in ranges), ranges
    assert sum(r["copied"] for r in ranges) == len(ids)
    keys = topic_keys(s)
    assert set(keys) == {events.key_bytes(i) for i in ids}
    assert set(keys.values()) == {1}
    source.database.client.close()


def test_parallel_snapshot_and_transform_fill_the_target(settings_kwargs: dict[str, Any]) -> None:
    """Capture by three ranges plus a worker: the target matches the mixed-id source."""
    s = load_settings(**{**settings_kwargs, "snapshot_parallelism": 3})
    ids = mixed_ids(4_000)
    source = seed(s, ids)
    with pipeline(s) as stages:
        report = wait_until_match(s, timeout=120, stages=stages)
    assert report.source_count == report.target_count == len(ids)
    assert len(checkpoint(s)["snapshot"]["ranges"]) == 3
    source.database.client.close()


def _stop_after_range_progress(
    monkeypatch: pytest.MonkeyPatch, stage: StageThread, ranges_with_progress: int
) -> None:
    """Stop ``stage`` at the first checkpoint where that many ranges have copied something."""
    real_save = MongoCheckpointStore.save

    def save_then_stop(store: MongoCheckpointStore, **fields: Any) -> None:
        real_save(store, **fields)
        snap = fields.get("snapshot") or {}
        started = [r for r in snap.get("ranges", []) if r["has_last"] and not r["done"]]
        if len(started) >= ranges_with_progress:
            stage.stop_flag.set("test: stop inside the ranges")

    monkeypatch.setattr(MongoCheckpointStore, "save", save_then_stop)


def test_stopped_parallel_snapshot_resumes_each_range(
    settings_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped with ranges half copied, a restart keeps the ranges and continues each one."""
    monkeypatch.setattr(tailer, "_SNAPSHOT_CHUNK", 300)
    s = load_settings(**{**settings_kwargs, "snapshot_parallelism": 3, "max_docs_per_second": 3000})
    ids = mixed_ids(4_500)
    seed(s, ids)
    first = StageThread(run_capture, s)
    _stop_after_range_progress(monkeypatch, first, 2)
    first.start()
    first.join(90)
    stopped = first.stop()
    monkeypatch.undo()
    before = checkpoint(s)["snapshot"]
    assert before["done"] is False
    assert sum(r["has_last"] and not r["done"] for r in before["ranges"]) >= 2, before
    copied_before = sum(r["copied"] for r in before["ranges"])
    assert stopped.captured == copied_before
    with pipeline(s) as stages:
        report = wait_until_match(s, timeout=120, stages=stages)
        resumed = stages["capture"]
        deadline = time.monotonic() + 30
        while not checkpoint(s)["snapshot"]["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert report.source_count == report.target_count == len(ids)
    after = checkpoint(s)["snapshot"]
    bounds = [(bson.encode({"v": r["lo"]}), bson.encode({"v": r["hi"]})) for r in after["ranges"]]
    assert bounds == [
        (bson.encode({"v": r["lo"]}), bson.encode({"v": r["hi"]})) for r in before["ranges"]
    ]
    assert sum(r["copied"] for r in after["ranges"]) == len(ids)
    # Resumed per range: the second run copied only what the first had not checkpointed.
    assert resumed.result.captured == len(ids) - copied_before


def test_single_range_checkpoint_resumes_as_one_range(
    settings_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A {done, last_id, read_at} checkpoint (capture before ranges) resumes after last_id,
    as one range, even when more parallelism is asked for now."""
    monkeypatch.setattr(tailer, "_SNAPSHOT_CHUNK", 500)
    s1 = load_settings(**{**settings_kwargs, "max_docs_per_second": 3000})
    ids = mixed_ids(3_000)
    seed(s1, ids)
    first = StageThread(run_capture, s1)
    real_save = MongoCheckpointStore.save

    def save_then_stop(store: MongoCheckpointStore, **fields: Any) -> None:
        real_save(store, **fields)
        if (fields.get("snapshot") or {}).get("last_id") is not None:
            first.stop_flag.set("test: stop after one checkpoint")

    monkeypatch.setattr(MongoCheckpointStore, "save", save_then_stop)
    first.start()
    first.join(60)
    stopped = first.stop()
    monkeypatch.setattr(MongoCheckpointStore, "save", real_save)
    old = checkpoint(s1)["snapshot"]
    assert set(old) == {"done", "last_id", "read_at"}, old
    assert old["done"] is False
    s4 = load_settings(**{**settings_kwargs, "snapshot_parallelism": 4})
    with pipeline(s4) as stages:
        report = wait_until_match(s4, timeout=120, stages=stages)
        resumed = stages["capture"]
    assert report.source_count == report.target_count == len(ids)
    done = checkpoint(s4)["snapshot"]
    assert done["done"] is True
    assert "ranges" not in done
    assert stopped.captured + resumed.result.captured == len(ids)
