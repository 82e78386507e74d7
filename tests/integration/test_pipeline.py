"""End to end on the real servers: source changes appear correctly in the target."""

from __future__ import annotations

import json
import time
import urllib.request
from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128
from confluent_kafka import Consumer, Producer

from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import client_for, pipeline, wait_until_match

pytestmark = pytest.mark.integration


def _order(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "cust_name": f"c{i}",
        "address": f"{i} Main St, Town, 1000{i % 10}",
        "total": i + 0.25,
        **extra,
    }


@pytest.mark.usefixtures("write_guard")  # both guard modes
def test_insert_update_delete_reach_target(settings_kwargs: dict[str, Any]) -> None:
    """Snapshot docs, then live insert/update/replace/delete, all land transformed in the target."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    existing = [_order(i) for i in range(50)]
    src.insert_many(existing)
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        new = _order(1000, status="paid")
        src.insert_one(new)
        src.update_one({"_id": existing[0]["_id"]}, {"$set": {"total": "99.50"}})
        src.replace_one({"_id": existing[1]["_id"]}, {"cust_name": "R", "total": 1})
        src.delete_one({"_id": existing[2]["_id"]})
        wait_until_match(s, stages=stages)
    got_new = tgt.find_one({"_id": new["_id"]})
    assert got_new is not None
    assert got_new["customer"] == {"name": "c1000"}
    assert got_new["address"] == {"street": "1000 Main St", "city": "Town", "zip": "10000"}
    assert got_new["status"] == "paid"
    updated = tgt.find_one({"_id": existing[0]["_id"]})
    assert updated is not None
    assert updated["total"] == Decimal128(Decimal("99.50"))
    replaced = tgt.find_one({"_id": existing[1]["_id"]})
    assert replaced is not None
    assert "address" not in replaced
    assert replaced["customer"]["name"] == "R"
    assert tgt.find_one({"_id": existing[2]["_id"]}) is None
    assert tgt.count_documents({}) == 50
    assert all("v" in d["_sm"] for d in tgt.find({}, {"_sm": 1}))
    client.close()


def test_bad_documents_go_to_quarantine_and_partition_moves(
    settings_kwargs: dict[str, Any],
) -> None:
    """A malformed document and a corrupt message are quarantined with reasons; others apply."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    bad = _order(1, address="not an address")
    src.insert_many([bad, *[_order(i) for i in range(2, 30)]])
    with pipeline(s) as stages:
        report = wait_until_match(s, stages=stages)
        producer = Producer({"bootstrap.servers": s.kafka_bootstrap})
        producer.produce(s.changes_topic, key=b"garbage", value=b"\x09not avro")
        producer.flush(10)
        quarantined = _read_stages(s, s.quarantine_topic, {"transform", "decode"})
    assert report.untransformable == 1
    reasons = {h["sm.stage"]: h for h in quarantined}
    assert "address" in reasons["transform"]["sm.reason"]
    assert "format byte 0x09" in reasons["decode"]["sm.reason"]
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    assert tgt.count_documents({}) == 28
    assert tgt.find_one({"_id": bad["_id"]}) is None
    client.close()


def _read_stages(
    s: Settings, topic: str, stages: set[str], timeout: float = 30
) -> list[dict[str, str]]:
    """Read quarantine headers until every stage in ``stages`` was seen.

    The same bad document may be quarantined twice (delivery is at-least-once:
    the snapshot copy and a replayed insert), so count stages, not messages.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": f"{s.migration}-q",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    try:
        while {h["sm.stage"] for h in out} != stages and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append({k: v.decode() for k, v in (msg.headers() or [])})
    finally:
        consumer.close()
    assert {h["sm.stage"] for h in out} == stages, f"quarantine holds {out}"
    return out


def test_metrics_and_health_endpoints(settings_kwargs: dict[str, Any]) -> None:
    """Each process serves Prometheus /metrics and a JSON /healthz on its port."""
    from stream_migrator.infra import free_port

    port = free_port()
    s = load_settings(**{**settings_kwargs, "metrics_port": port})
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].insert_many([_order(i) for i in range(5)])
    with pipeline(s, capture=False) as _:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.loads(r.read())
                    status = r.status
                break
            except OSError:
                assert time.monotonic() < deadline, "no /healthz answer"
                time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
    assert status == 200
    assert health["component"] == "transform"
    for name in ("sm_events_applied_total", "sm_batch_seconds", "sm_consumer_lag_events"):
        assert name in metrics
    client.close()
