"""Pure capture logic: split-event reassembly, throttling, operator inputs, error mapping."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from bson import Timestamp
from pymongo.errors import OperationFailure

from stream_migrator.capture.positions import parse_start_at, parse_token
from stream_migrator.capture.split_events import SplitEventAssembler, supports_split_events
from stream_migrator.capture.tailer import history_lost_error
from stream_migrator.capture.throttle import SnapshotThrottle
from stream_migrator.errors import ConfigError, FatalError
from stream_migrator.mongo import next_tick
from stream_migrator.runtime import StopFlag


def _fragments() -> list[dict[str, Any]]:
    """Fragments shaped as MongoDB documents them: top-level fields spread in order."""
    ts = Timestamp(1_700_000_000, 3)
    return [
        {
            "_id": {"_data": "01"},
            "splitEvent": {"fragment": 1, "of": 3},
            "operationType": "update",
            "clusterTime": ts,
            "documentKey": {"_id": 7},
        },
        {
            "_id": {"_data": "02"},
            "splitEvent": {"fragment": 2, "of": 3},
            "fullDocument": {"_id": 7, "blob": "x" * 10},
        },
        {
            "_id": {"_data": "03"},
            "splitEvent": {"fragment": 3, "of": 3},
            "fullDocumentBeforeChange": {"_id": 7, "blob": "y"},
        },
    ]


def test_split_event_reassembles_in_order() -> None:
    """Three fragments give one event with every field and the last fragment's token."""
    asm = SplitEventAssembler()
    parts = _fragments()
    assert asm.add(parts[0]) is None
    assert asm.pending
    assert asm.add(parts[1]) is None
    whole = asm.add(parts[2])
    assert whole is not None
    assert not asm.pending
    assert whole["_id"] == {"_data": "03"}
    assert whole["operationType"] == "update"
    assert whole["documentKey"] == {"_id": 7}
    assert whole["fullDocument"]["blob"] == "x" * 10
    assert "splitEvent" not in whole


def test_split_event_out_of_order_is_fatal() -> None:
    """A missing fragment stops capture instead of emitting half an event."""
    asm = SplitEventAssembler()
    with pytest.raises(FatalError, match="expected fragment 1"):
        asm.add(_fragments()[1])


def test_unsplit_event_passes_through() -> None:
    """Ordinary events are returned unchanged."""
    event = {"_id": {"_data": "9"}, "operationType": "insert"}
    assert SplitEventAssembler().add(event) is event


def test_split_support_by_version() -> None:
    """Requested from MongoDB 7.0 and 6.0.9, not before."""
    assert supports_split_events([7, 0, 0])
    assert supports_split_events([6, 0, 9])
    assert not supports_split_events([6, 0, 0])
    assert not supports_split_events([5, 0])


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _FakeStop(StopFlag):
    """A stop flag whose wait advances the fake clock instead of sleeping."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float) -> bool:
        self.clock.now += timeout
        return False


def test_throttle_caps_rate() -> None:
    """At 100 docs/s, admitting 300 documents takes 3 s of (fake) time."""
    clock = _Clock()
    throttle = SnapshotThrottle(_FakeStop(clock), max_per_second=100, clock=clock)
    for _ in range(300):
        throttle.admit()
    assert clock.now == pytest.approx(3.0, abs=0.02)


def test_throttle_pauses_while_lag_high_and_says_why() -> None:
    """Lag above the fence pauses the copy until it drops, announcing pause and resume."""
    clock = _Clock()
    said: list[str] = []
    throttle = SnapshotThrottle(
        _FakeStop(clock),
        lag_probe=lambda: 5000 if clock.now < 3.0 else 10,
        max_lag=1000,
        check_every_s=1.0,
        on_wait=said.append,
        clock=clock,
    )
    try:
        throttle.admit()
    finally:
        throttle.close()
    assert throttle.waited_s == pytest.approx(3.0)
    assert said[0] == "transform lag 5000 events > 1000; snapshot paused"
    assert said[1] == "transform lag 10 events; snapshot resumed"


def test_throttle_admit_leaves_the_lag_probe_to_its_thread_below_the_fence() -> None:
    """Below the fence admit never runs the probe (a broker round trip) itself."""
    main = threading.get_ident()
    calls = {"admit": 0, "watcher": 0}

    def probe() -> int:
        if threading.get_ident() == main:
            calls["admit"] += 1
            return 0
        calls["watcher"] += 1
        if calls["watcher"] > 1:
            time.sleep(0.2)  # a probe waiting behind a fetch; the copy goes on meanwhile
        return 0

    throttle = SnapshotThrottle(StopFlag(), lag_probe=probe, max_lag=1_000_000, check_every_s=0.05)
    try:
        for _ in range(3000):
            throttle.admit()
    finally:
        throttle.close()
    assert calls["admit"] == 0
    assert calls["watcher"] >= 1


def test_throttle_fence_engages_between_readings() -> None:
    """A copy faster than the probe period still stops at the fence, not one period later."""
    stop = StopFlag()
    admitted = 0
    said: list[str] = []

    def on_wait(why: str) -> None:
        said.append(why)
        stop.set("test: paused")

    # Nothing is consumed: the lag is every document admitted. One reading per hour.
    throttle = SnapshotThrottle(
        stop, lag_probe=lambda: admitted, max_lag=100, check_every_s=3600, on_wait=on_wait
    )
    try:
        while not stop.is_set():
            admitted += 1
            throttle.admit()
            assert admitted < 10_000, "the fence never engaged"
    finally:
        throttle.close()
    assert admitted == 101
    assert said[0] == "transform lag 101 events > 100; snapshot paused"


def test_parse_operator_inputs() -> None:
    """Tokens as JSON or hex, times as SECONDS.INC or ISO-8601; junk is a ConfigError."""
    assert parse_token('{"_data": "82AB"}') == {"_data": "82AB"}
    assert parse_token("82ab01") == {"_data": "82ab01"}
    assert parse_start_at("1700000000.5") == Timestamp(1_700_000_000, 5)
    assert parse_start_at("2023-11-14T22:13:20Z") == Timestamp(1_700_000_000, 0)
    with pytest.raises(ConfigError, match="--resume-after"):
        parse_token("not a token!")
    with pytest.raises(ConfigError, match="no time zone"):
        parse_start_at("2023-11-14T22:13:20")


def test_history_lost_is_fatal_and_says_what_to_do() -> None:
    """Server code 286 becomes a FatalError that names --resnapshot; other codes do not."""
    err = history_lost_error(OperationFailure("history lost", code=286), "shop.orders")
    assert err is not None
    assert "--resnapshot" in str(err)
    assert "shop.orders" in str(err)
    assert err.code == 286
    assert history_lost_error(OperationFailure("other", code=2), "shop.orders") is None


def test_next_tick_follows_increment_then_second() -> None:
    """A stream start one tick after a majority read time: next increment, or next second."""
    assert next_tick(Timestamp(1_700_000_000, 7)) == Timestamp(1_700_000_000, 8)
    assert next_tick(Timestamp(1_700_000_000, 0xFFFFFFFF)) == Timestamp(1_700_000_001, 0)
