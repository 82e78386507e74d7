"""Capture killed with SIGKILL inside a parallel snapshot resumes each range and loses nothing."""

from __future__ import annotations

import signal
import time
from typing import Any

import bson
import pytest

from stream_migrator.settings import load_settings
from tests.chaos.test_capture_kill import _kill_leftover_captures, _start_capture
from tests.integration.helpers import client_for, pipeline, settings_env, wait_until_match
from tests.integration.test_snapshot_parallel import mixed_ids, seed, topic_keys

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
#: Autouse: a failed assertion leaves no capture process running (started by _start_capture).
__all__ = ["_kill_leftover_captures"]


def _bounds(snapshot: dict[str, Any]) -> list[bytes]:
    return [bson.encode({"lo": r["lo"], "hi": r["hi"]}) for r in snapshot["ranges"]]


def test_capture_sigkill_inside_parallel_snapshot_resumes_every_range(
    settings_kwargs: dict[str, Any], tmp_path: Any
) -> None:
    """SIGKILL once several ranges checkpointed progress; the restart keeps the ranges,
    finishes each, and the target ends with every document."""
    s = load_settings(**{**settings_kwargs, "snapshot_parallelism": 4, "max_docs_per_second": 2000})
    env = settings_env(s)
    client = client_for(s)
    ids = mixed_ids(16_000)
    seed(s, ids)
    checkpoints = client[s.metadata_db]["checkpoints"]
    log_path = tmp_path / "capture.log"
    log = log_path.open("wb")
    proc = _start_capture(env, log)
    deadline = time.monotonic() + 90
    while True:
        snapshot = (checkpoints.find_one({"_id": f"{s.migration}/capture"}) or {}).get("snapshot")
        ranges = (snapshot or {}).get("ranges") or []
        if sum(r["has_last"] for r in ranges) >= 2:
            break
        assert proc.poll() is None, log_path.read_text()[-2000:]
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no drain, no final checkpoint
    proc.wait(30)
    assert snapshot is not None
    assert snapshot["done"] is False
    assert len(ranges) == 4
    assert sum(r["copied"] for r in ranges) < len(ids), "killed after the copy"
    with pipeline(s, capture=False) as stages:
        proc = _start_capture(env, log)
        report = wait_until_match(s, timeout=180, stages=stages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-2000:]
    assert report.source_count == report.target_count == len(ids)
    after = (checkpoints.find_one({"_id": f"{s.migration}/capture"}) or {})["snapshot"]
    assert after["done"] is True
    assert _bounds(after) == _bounds(snapshot), "the restart planned other ranges"
    # Every document reached Kafka; those after a range's last checkpoint twice at most.
    keys = topic_keys(s)
    assert len(keys) == len(ids)
    assert max(keys.values()) <= 2
    client.close()
