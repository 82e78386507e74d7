"""Transform workers killed with SIGKILL, and a 3-worker group rebalancing, lose nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.app import run_capture
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import (
    REPO,
    StageThread,
    client_for,
    settings_env,
    wait_until_match,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _worker(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_migrator", "transform"],
            cwd=REPO,
            env={**os.environ, **settings_env(s)},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


class _Writer(threading.Thread):
    """Live inserts, updates (a per-document counter) and deletes on the source."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True)
        self.client = client_for(s)
        self.coll = self.client[s.split_ns(s.source)[0]]["orders"]
        self.stop = threading.Event()
        self.writes = 0

    def run(self) -> None:
        rng = random.Random(3)
        ids = [d["_id"] for d in self.coll.find({}, {"_id": 1}).limit(300)]
        while not self.stop.is_set():
            roll = rng.random()
            if roll < 0.5:
                # Per-key order matters here: the final counter must win.
                self.coll.update_one({"_id": rng.choice(ids[:30])}, {"$inc": {"total": 1}})
            elif roll < 0.9:
                self.coll.insert_one({"_id": ObjectId(), "cust_name": "live", "total": 1})
            elif len(ids) > 40:
                self.coll.delete_one({"_id": ids.pop()})
            self.writes += 1
            time.sleep(0.002)


def _owned(log: Path) -> set[int]:
    """Partitions a worker was ever assigned, from its JSON log."""
    if not log.exists():
        return set()
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return {p for e in events if e["event"] == "partitions.assigned" for p in e["partitions"]}


def _wait_owns_partitions(log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _owned(log):
        assert time.monotonic() < deadline, f"{log.name}: no partitions after {timeout}s"
        time.sleep(0.2)


def _seed(s: Settings, n: int) -> None:
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].insert_many(
        [{"_id": ObjectId(), "cust_name": f"c{i}", "total": i} for i in range(n)]
    )
    client.close()


def test_worker_sigkill_at_random_points_loses_nothing(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """Three SIGKILLs of the worker mid-batch under live writes; the target converges exactly."""
    s = load_settings(**{**settings_kwargs, "batch_size": 200})
    _seed(s, 3000)
    log = tmp_path / "worker.log"
    capture = StageThread(run_capture, s)
    capture.start()
    writer = _Writer(s)
    writer.start()
    rng = random.Random(11)
    proc = _worker(s, log)
    try:
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 3.0))
            proc.send_signal(signal.SIGKILL)  # no drain, no commit
            proc.wait(30)
            proc = _worker(s, log)
        time.sleep(1.0)
        writer.stop.set()
        writer.join(10)
        report = wait_until_match(s, timeout=120, stages={"capture": capture})
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        capture.stop()
        writer.client.close()
    assert code == 0, log.read_text()[-2000:]
    assert writer.writes > 200
    assert report.mismatches == 0
    assert report.source_count > 3000


def test_three_workers_rebalance_keeps_order_and_loses_nothing(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """Three workers share six partitions; one leaves and another joins mid-stream; no loss."""
    s = load_settings(**{**settings_kwargs, "partitions": 6, "batch_size": 100})
    _seed(s, 3000)
    capture = StageThread(run_capture, s)
    capture.start()
    writer = _Writer(s)
    writer.start()
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    procs = [_worker(s, logs[i]) for i in range(3)]
    try:
        for path in logs[:3]:
            _wait_owns_partitions(path)
        procs[0].send_signal(signal.SIGTERM)  # graceful leave: finish batch, commit
        assert procs[0].wait(60) == 0, logs[0].read_text()[-2000:]
        procs.append(_worker(s, logs[3]))  # join: another rebalance
        _wait_owns_partitions(logs[3])
        time.sleep(2.0)
        writer.stop.set()
        writer.join(10)
        report = wait_until_match(s, timeout=120, stages={"capture": capture})
    finally:
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in procs[1:]]
        capture.stop()
        writer.client.close()
    assert codes == [0, 0, 0]
    assert report.mismatches == 0
    assigned = [_owned(path) for path in logs]
    assert all(assigned), f"every worker should have owned partitions: {assigned}"
    assert set().union(*assigned) == set(range(6))
