"""Capture's history-lost path end to end, on a stand-in MongoDB of its own with a tiny oplog."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from stream_migrator.infra import LocalStack, free_port
from stream_migrator.settings import load_settings
from tests.backends import REPO
from tests.integration.helpers import settings_env
from tests.integration.processes import Proc, metric, wait_for

pytestmark = [pytest.mark.integration]

#: The oplog keeps this many entries; the test writes more than that while capture is down.
_OPLOG_BOUND = 20


@pytest.fixture
def small_oplog_mongo(unique: str) -> Iterator[str]:
    """A stand-in MongoDB (no Kafka) whose oplog keeps only ``_OPLOG_BOUND`` entries; its URI."""
    state = REPO / ".sm" / f"history-lost-{unique}"
    stack = LocalStack(state, oplog_max_entries=_OPLOG_BOUND)
    try:
        stack.up(quiet=True, only=frozenset({"mongo"}))
        yield stack.mongo_uri()
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


def test_capture_exits_with_history_lost_when_its_resume_point_left_the_oplog(
    settings_kwargs: dict[str, Any], small_oplog_mongo: str, tmp_path: Path, procs: list[Proc]
) -> None:
    """Capture stopped, the oplog rolls past its checkpoint: the restart exits 1 naming the fix."""
    s = load_settings(**{**settings_kwargs, "mongo_uri": small_oplog_mongo})
    client: MongoClient[dict[str, Any]] = MongoClient(small_oplog_mongo)
    db, coll = s.split_ns(s.source)
    src = client[db][coll]
    src.insert_many([{"_id": i, "total": i} for i in range(3)])
    port = free_port()
    env = {**settings_env(s), "SM_METRICS_PORT": str(port)}
    first = Proc(["capture"], env, tmp_path / "capture-1.log")
    procs.append(first)

    def captured() -> float:
        return metric(port, "sm_events_captured_total") or 0.0

    wait_for("the snapshot", lambda: captured() >= 3, 90, proc=first)
    src.insert_one({"_id": 100, "total": 100})
    wait_for("the streamed insert", lambda: captured() >= 4, 60, proc=first)
    checkpoints = client[s.metadata_db]["checkpoints"]
    wait_for(
        "a resume-token checkpoint",
        lambda: checkpoints.find_one({"resume_token": {"$ne": None}}) is not None,
        60,
        proc=first,
    )
    assert first.terminate() == 0, first.text()[-3000:]

    src.insert_many([{"_id": 1000 + i, "total": i} for i in range(2 * _OPLOG_BOUND)])

    second = Proc(["capture"], env, tmp_path / "capture-2.log")
    procs.append(second)
    try:
        code = second.popen.wait(120)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"capture resumed instead of exiting with history lost:\n{second.text()[-3000:]}"
        ) from None
    out = second.text()
    assert code == 1, out[-3000:]
    assert "history lost, server code 286" in out, out[-3000:]
    assert "--resnapshot" in out, out[-3000:]
