"""Capture on the real servers: snapshot handoff, resume, operator ways out, drops, big events."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
import structlog.testing
from bson import ObjectId, Timestamp

from stream_migrator.app import run_capture
from stream_migrator.capture import tailer
from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.capture.positions import apply_capture_action
from stream_migrator.errors import FatalError
from stream_migrator.reconcile import full_compare
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec
from stream_migrator.transform.quarantine import read_quarantine
from tests.integration.helpers import StageThread, client_for, pipeline, wait_until_match

pytestmark = pytest.mark.integration


def _checkpoint(s: Settings) -> dict[str, Any]:
    client = client_for(s)
    try:
        return (
            client[s.metadata_db]["checkpoints"].find_one({"_id": f"{s.migration}/capture"}) or {}
        )
    finally:
        client.close()


def _seed(s: Settings, n: int) -> list[ObjectId]:
    ids = [ObjectId() for _ in range(n)]
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].insert_many(
        [{"_id": i, "cust_name": f"c{k}", "total": k} for k, i in enumerate(ids)]
    )
    client.close()
    return ids


def test_snapshot_with_concurrent_writes_converges_exactly(settings_kwargs: dict[str, Any]) -> None:
    """Writes during a throttled snapshot (inserts, updates, deletes) all end up right."""
    s = load_settings(**{**settings_kwargs, "max_docs_per_second": 2000})
    ids = _seed(s, 5000)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    stop = threading.Event()
    rng = random.Random(5)

    def writer() -> None:
        while not stop.is_set():
            victim = rng.choice(ids)
            roll = rng.random()
            if roll < 0.6:
                src.update_one({"_id": victim}, {"$set": {"total": rng.randint(1, 10**6)}})
            elif roll < 0.8:
                src.insert_one({"_id": ObjectId(), "cust_name": "new", "total": 1})
            else:
                src.delete_one({"_id": victim})

    thread = threading.Thread(target=writer, daemon=True)
    with pipeline(s) as stages:
        thread.start()
        time.sleep(3.0)  # the snapshot needs ~2.5 s at 2000 docs/s: writes overlap it
        stop.set()
        thread.join(10)
        report = wait_until_match(s, timeout=120, stages=stages)
    assert report.mismatches == 0
    assert _checkpoint(s)["snapshot"]["done"] is True
    client.close()


def test_snapshot_resumes_after_last_copied_id(settings_kwargs: dict[str, Any]) -> None:
    """A stopped snapshot restarts after the last checkpointed _id, not from the beginning."""
    s = load_settings(**{**settings_kwargs, "max_docs_per_second": 4000})
    _seed(s, 12_000)
    first = StageThread(run_capture, s)
    first.start()
    deadline = time.monotonic() + 30
    while not (_checkpoint(s).get("snapshot") or {}).get("last_id"):
        assert time.monotonic() < deadline, "no snapshot progress checkpoint"
        time.sleep(0.1)
    first.stop()
    cp = _checkpoint(s)
    assert cp["snapshot"]["done"] is False
    second = StageThread(run_capture, s)
    second.start()
    deadline = time.monotonic() + 60
    while not _checkpoint(s)["snapshot"]["done"]:
        assert time.monotonic() < deadline, "snapshot did not finish"
        time.sleep(0.2)
    resumed = second.stop()
    assert resumed.captured < 12_000 - 4000, "the second run copied everything again"
    with pipeline(s, capture=False) as stages:
        wait_until_match(s, stages=stages)


def test_snapshot_pauses_while_transform_lags(settings_kwargs: dict[str, Any]) -> None:
    """With no worker consuming, the snapshot stops at the lag fence and resumes with one."""
    s = load_settings(**{**settings_kwargs, "snapshot_max_lag": 1000})
    _seed(s, 10_000)
    capture = StageThread(run_capture, s)
    capture.start()
    time.sleep(4.0)
    assert _checkpoint(s)["snapshot"]["done"] is False, "snapshot ignored the lag fence"
    with pipeline(s, capture=False) as stages:
        stages["capture"] = capture
        wait_until_match(s, timeout=90, stages=stages)
        del stages["capture"]
    capture.stop()
    assert _checkpoint(s)["snapshot"]["done"] is True


def test_drop_stops_capture_and_resnapshot_recovers(settings_kwargs: dict[str, Any]) -> None:
    """Dropping the source stops capture with a recorded reason; --resnapshot starts over."""
    s = load_settings(**settings_kwargs)
    _seed(s, 10)
    capture = StageThread(run_capture, s)
    capture.start()
    deadline = time.monotonic() + 30
    while not _checkpoint(s).get("resume_token") and not _checkpoint(s).get("snapshot", {}).get(
        "done"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].drop()
    capture.join(30)
    assert isinstance(capture.error, FatalError)
    assert "'drop'" in str(capture.error)
    assert _checkpoint(s)["stopped"]["reason"] == "drop"

    refused = StageThread(run_capture, s)
    refused.start()
    refused.join(30)
    assert isinstance(refused.error, FatalError)
    assert "--resnapshot" in str(refused.error)

    assert apply_capture_action(s, resnapshot=True) == "re-snapshot from scratch"
    new_ids = _seed(s, 5)
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    with pipeline(s) as _:
        deadline = time.monotonic() + 30
        while tgt.count_documents({"_id": {"$in": new_ids}}) < 5:
            assert time.monotonic() < deadline, "re-snapshot did not copy the new collection"
            time.sleep(0.2)
    # The target keeps what the dropped collection had: compare shows it as extra.
    report = full_compare(client[s.split_ns(s.source)[0]]["orders"], tgt, get_spec(s.spec))
    assert (report.missing, report.extra, report.different) == (0, 10, 0)
    action = client[s.metadata_db]["capture_actions"].find_one({"migration": s.migration})
    assert action is not None
    assert action["replaced_checkpoint"]["stopped"]["reason"] == "drop"
    client.close()


def test_start_at_skips_snapshot_and_is_recorded(settings_kwargs: dict[str, Any]) -> None:
    """--start-at streams changes from that time only (no snapshot) and records the action."""
    s = load_settings(**settings_kwargs)
    old = _seed(s, 20)
    time.sleep(1.1)
    now = Timestamp(int(time.time()), 0)
    what = apply_capture_action(s, start_at=f"{now.time}.{now.inc}")
    assert what == f"start at operation time {now.time}.0"
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
    fresh = ObjectId()
    with pipeline(s) as _:
        time.sleep(1.0)
        src.insert_one({"_id": fresh, "cust_name": "after", "total": 1})
        deadline = time.monotonic() + 30
        while tgt.find_one({"_id": fresh}) is None:
            assert time.monotonic() < deadline, "change after --start-at never arrived"
            time.sleep(0.2)
    assert tgt.find_one({"_id": old[0]}) is None  # before the start time: not copied
    assert _checkpoint(s)["snapshot"]["skipped_by"] == "operator"
    assert client[s.metadata_db]["capture_actions"].count_documents({"migration": s.migration}) == 1
    client.close()


def test_oversize_event_is_quarantined_and_capture_continues(
    settings_kwargs: dict[str, Any],
) -> None:
    """An event over SM_MAX_EVENT_BYTES goes to quarantine naming _id and size; others flow."""
    s = load_settings(**{**settings_kwargs, "max_event_bytes": 64_000})
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    big = ObjectId()
    src.insert_many(
        [
            {"_id": big, "cust_name": "big", "total": 1, "blob": "x" * 100_000},
            {"_id": ObjectId(), "cust_name": "small", "total": 2},
        ]
    )
    with pipeline(s) as stages:
        src.insert_one({"_id": ObjectId(), "cust_name": "later", "total": 3})
        deadline = time.monotonic() + 30
        tgt = client[s.split_ns(s.target)[0]]["orders_v2"]
        while tgt.count_documents({}) < 2:
            assert time.monotonic() < deadline
            assert stages["capture"].error is None
            time.sleep(0.2)
        quarantined = read_quarantine(s.kafka_bootstrap, s.quarantine_topic)
    oversize = [q for q in quarantined if q.stage == "capture"]
    assert oversize, "oversize event not in quarantine"
    assert oversize[0].doc_id() == big
    assert str(big) in oversize[0].reason
    assert "over the limit of 64000" in oversize[0].reason
    assert tgt.find_one({"_id": big}) is None
    client.close()


def test_capture_stopped_before_it_tails_still_logs_its_stop(
    settings_kwargs: dict[str, Any],
) -> None:
    """A stop that arrives during start-up (e.g. the other half of `rollout reverse` died)."""
    s = load_settings(**settings_kwargs)
    stop = StopFlag()
    stop.set("test stop")
    with structlog.testing.capture_logs() as logs:
        capture = run_capture(s, stop)
    assert capture.captured == 0
    stopped = [e for e in logs if e["event"] == "capture.stopped"]
    assert [e["reason"] for e in stopped] == ["test stop"], logs


def test_snapshot_resumed_inside_int_ids_copies_every_type(
    settings_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot stopped inside the int _ids copies the string and ObjectId _ids on restart."""
    monkeypatch.setattr(tailer, "_SNAPSHOT_CHUNK", 10)
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    ids: list[Any] = [
        *range(40),
        *(f"s{k:02}" for k in range(20)),
        *(ObjectId() for _ in range(20)),
    ]
    src.insert_many([{"_id": i, "cust_name": f"c{k}", "total": k} for k, i in enumerate(ids)])
    first = StageThread(run_capture, s)
    real_save = MongoCheckpointStore.save

    def save_then_stop(store: MongoCheckpointStore, **fields: Any) -> None:
        real_save(store, **fields)
        if (fields.get("snapshot") or {}).get("done") is False and fields["snapshot"]["last_id"]:
            first.stop_flag.set("test: stop inside the int ids")

    monkeypatch.setattr(MongoCheckpointStore, "save", save_then_stop)
    first.start()
    first.join(60)
    first.stop()
    monkeypatch.setattr(MongoCheckpointStore, "save", real_save)
    snapshot = _checkpoint(s)["snapshot"]
    assert snapshot["done"] is False
    assert isinstance(snapshot["last_id"], int), snapshot
    with pipeline(s) as stages:
        report = wait_until_match(s, timeout=60, stages=stages)
    assert report.source_count == len(ids)
    client.close()
