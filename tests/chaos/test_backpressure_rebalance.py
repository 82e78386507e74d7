"""A target outage while a worker leaves the group: the survivor takes over its partitions under
backpressure and, after the outage, every event reaches the target (nothing fetched is dropped)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo.uri_parser import parse_uri

from stream_migrator.app import run_capture
from stream_migrator.settings import load_settings
from tests.integration.helpers import StageThread, client_for, settings_env, wait_until_match
from tests.integration.processes import Proc, wait_for
from tests.integration.proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _owns(proc: Proc) -> set[int]:
    """The partitions ``proc`` owns now, replaying its (incremental) assign/revoke log."""
    owned: set[int] = set()
    for e in proc.events():
        if e["event"] == "partitions.assigned":
            owned |= set(e["partitions"])
        elif e["event"] == "partitions.revoked":
            owned -= set(e["partitions"])
    return owned


def _backpressure_beats(proc: Proc) -> int:
    return sum(e["event"] == "transform.backpressure" for e in proc.events())


def test_worker_leaving_during_target_outage_loses_nothing(
    settings_kwargs: dict[str, Any], tmp_path: Path, procs: list[Proc]
) -> None:
    """Target cut, worker B SIGKILLed; A gets B's partitions under backpressure; all arrive."""
    s = load_settings(**{**settings_kwargs, "batch_size": 50})
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    tgt = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    src.insert_many([{"_id": ObjectId(), "cust_name": f"c{i}", "total": i} for i in range(300)])
    proxy = TcpProxy(parse_uri(s.mongo_uri.get_secret_value())["nodelist"][0])
    # Only the workers' target goes through the proxy; capture keeps feeding Kafka.
    env = {**settings_env(s), "SM_MONGO_URI": proxy.uri}
    capture = StageThread(run_capture, s)
    capture.start()
    a = Proc(["transform"], env, tmp_path / "worker_a.log")
    procs.append(a)
    b = Proc(["transform"], env, tmp_path / "worker_b.log")
    procs.append(b)
    try:
        wait_for("B owns partitions", lambda: bool(_owns(b)), 60, proc=b)
        wait_for("A owns partitions", lambda: bool(_owns(a)), 60, proc=a)
        wait_until_match(s, timeout=120, stages={"capture": capture})
        mine, theirs = _owns(a), _owns(b)
        assert mine, theirs
        assert theirs, mine
        assert not mine & theirs, (mine, theirs)

        proxy.cut()
        # Events for every partition, written while the target is unreachable:
        # each worker now holds a failing batch, the rest waits in Kafka.
        src.insert_many([{"_id": ObjectId(), "cust_name": f"o{i}", "total": i} for i in range(600)])
        wait_for("A under backpressure", lambda: _backpressure_beats(a) >= 1, 60, proc=a)
        wait_for("B under backpressure", lambda: _backpressure_beats(b) >= 1, 60, proc=b)
        b.popen.send_signal(signal.SIGKILL)  # leaves with its batch unwritten, uncommitted
        b.popen.wait(30)
        # The group moves B's partitions to A after the session timeout, mid-backoff.
        wait_for(
            "A to take B's partitions",
            lambda: _owns(a) >= mine | theirs,
            90,
            proc=a,
        )
        beats = _backpressure_beats(a)
        # A few more backoff rounds with the new partitions assigned (the old code
        # fetched from them here and threw the messages away).
        wait_for("more backoff rounds", lambda: _backpressure_beats(a) >= beats + 2, 90, proc=a)
        proxy.restore()

        report = wait_until_match(s, timeout=120, stages={"capture": capture})
        assert report.mismatches == 0
        assert tgt.count_documents({}) == src.count_documents({}) == 900
        assert a.terminate() == 0, a.text()[-3000:]
    finally:
        proxy.cut()
        capture.stop()
        client.close()
