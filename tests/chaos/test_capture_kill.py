"""Capture killed with SIGKILL mid-stream and restarted loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.settings import load_settings
from tests.integration.helpers import REPO, client_for, pipeline, settings_env, wait_until_match

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _kill_leftover_captures() -> Iterator[None]:
    """A failed assertion must not leave a capture process tailing the shared servers."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _start_capture(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_migrator", "capture"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _started.append(proc)
    return proc


def test_capture_sigkill_mid_stream_loses_nothing(
    settings_kwargs: dict[str, Any], tmp_path: Any
) -> None:
    """Two SIGKILLs of capture during live writes; after restart the target equals the source."""
    s = load_settings(**settings_kwargs)
    env = settings_env(s)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    src.insert_many([{"_id": ObjectId(), "cust_name": f"c{i}", "total": i} for i in range(2000)])
    stop_writes = threading.Event()
    written: list[int] = [0]

    def writer() -> None:
        ids = [d["_id"] for d in src.find({}, {"_id": 1}).limit(500)]
        i = 0
        while not stop_writes.is_set():
            i += 1
            if i % 3 == 0:
                src.update_one({"_id": ids[i % len(ids)]}, {"$set": {"total": i}})
            elif i % 7 == 0 and len(ids) > 10:
                src.delete_one({"_id": ids.pop()})
            else:
                src.insert_one({"_id": ObjectId(), "cust_name": f"live{i}", "total": i})
            written[0] = i

    log = (tmp_path / "capture.log").open("wb")
    thread = threading.Thread(target=writer, daemon=True)
    with pipeline(s, capture=False) as stages:
        proc = _start_capture(env, log)
        thread.start()
        for pause in (3.0, 2.0):
            time.sleep(pause)
            proc.send_signal(signal.SIGKILL)  # no drain, no final checkpoint
            proc.wait(30)
            proc = _start_capture(env, log)
        time.sleep(2.0)
        stop_writes.set()
        thread.join(10)
        report = wait_until_match(s, timeout=120, stages=stages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "capture.log").read_text()[-2000:]
    assert written[0] > 100, "the writer did not write during the kills"
    assert report.source_count == src.count_documents({}) > 2000
    checkpoint = client[s.metadata_db]["checkpoints"].find_one({"_id": f"{s.migration}/capture"})
    assert checkpoint is not None
    assert checkpoint["resume_token"] is not None
    client.close()


def test_capture_sigkill_inside_int_ids_snapshot_copies_every_type(
    settings_kwargs: dict[str, Any], tmp_path: Any
) -> None:
    """SIGKILL while the snapshot copies int _ids; after restart strings and ObjectIds arrive."""
    s = load_settings(**{**settings_kwargs, "max_docs_per_second": 2000})
    env = settings_env(s)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]]["orders"]
    ids: list[Any] = [*range(12_000), *(f"s{k:04}" for k in range(300))]
    ids += [ObjectId() for _ in range(300)]
    src.insert_many([{"_id": i, "cust_name": f"c{k}", "total": k} for k, i in enumerate(ids)])
    checkpoints = client[s.metadata_db]["checkpoints"]
    log = (tmp_path / "capture.log").open("wb")
    proc = _start_capture(env, log)
    deadline = time.monotonic() + 60
    while True:
        snapshot = (checkpoints.find_one({"_id": f"{s.migration}/capture"}) or {}).get("snapshot")
        if snapshot and snapshot.get("last_id") is not None:
            break
        assert time.monotonic() < deadline, (tmp_path / "capture.log").read_text()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert snapshot["done"] is False
    assert isinstance(snapshot["last_id"], int), f"not killed inside the ints: {snapshot}"
    with pipeline(s, capture=False) as stages:
        proc = _start_capture(env, log)
        report = wait_until_match(s, timeout=120, stages=stages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "capture.log").read_text()[-2000:]
    assert report.source_count == len(ids)
    client.close()
