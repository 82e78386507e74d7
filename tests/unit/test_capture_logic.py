"""Pure capture logic: split-event reassembly, throttling, operator inputs, error mapping."""

from __future__ import annotations

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
    lags = iter([5000, 5000, 5000, 10])
    said: list[str] = []
    throttle = SnapshotThrottle(
        _FakeStop(clock),
        lag_probe=lambda: next(lags),
        max_lag=1000,
        check_every_s=1.0,
        on_wait=said.append,
        clock=clock,
    )
    clock.now = 1.0
    throttle.admit()
    assert throttle.waited_s == pytest.approx(3.0)
    assert said[0] == "transform lag 5000 events > 1000; snapshot paused"
    assert said[1] == "transform lag 10 events; snapshot resumed"


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
