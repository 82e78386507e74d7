"""The Kafka broker SIGKILLed mid-drain, restarted on its own data: nothing lost, nothing twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.infra import LocalStack
from stream_migrator.settings import load_settings
from stream_migrator.transform.quarantine import read_quarantine
from tests.backends import REPO
from tests.integration.helpers import client_for, settings_env, wait_until_match
from tests.integration.processes import Proc, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class _Broker:
    """This test's own broker: SIGKILL it, start it again with the same argv and data dir."""

    def __init__(self, stack: LocalStack) -> None:
        info = stack.servers()["kafka"]
        self.pid = info.pid
        self.host, self.port = info.host, info.port
        self.log = Path(info.log)
        # The running JVM's exact command line: same properties file, so the same
        # ports and the same log.dirs (LocalStack.up would format a fresh one).
        self._argv = Path(f"/proc/{info.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        self._cwd = Path(f"/proc/{info.pid}/cwd").resolve()
        self._proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(30)
        else:
            deadline = time.monotonic() + 30
            while _running(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv,
                cwd=self._cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            time.sleep(0.3)
        raise AssertionError(f"restarted broker did not listen within {timeout}s")


@pytest.fixture
def own_kafka(unique: str) -> Iterator[_Broker]:
    """A Kafka broker of this test alone (the shared one is never killed)."""
    state = REPO / ".sm" / f"kafka-kill-{unique}"
    stack = LocalStack(state)
    broker: _Broker | None = None
    try:
        stack.up(quiet=True, only=frozenset({"kafka"}))
        broker = _Broker(stack)
        yield broker
    finally:
        if broker is not None:
            broker.kill()
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


def test_kafka_sigkill_and_restart_mid_drain_loses_nothing(
    settings_kwargs: dict[str, Any], own_kafka: _Broker, tmp_path: Path, procs: list[Proc]
) -> None:
    """Broker SIGKILLed while the worker drains, source written meanwhile; all arrive once."""
    s = load_settings(
        **{
            **settings_kwargs,
            "kafka_bootstrap": f"{own_kafka.host}:{own_kafka.port}",
            "batch_size": 20,  # many commits: the kill lands between write and commit
        }
    )
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    tgt = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    seeded = 10_000  # 500 batches: still draining (writing, committing) when Kafka dies
    src.insert_many([{"_id": ObjectId(), "cust_name": f"c{i}", "total": i} for i in range(seeded)])
    env = settings_env(s)
    capture = Proc(["capture"], env, tmp_path / "capture.log")
    procs.append(capture)
    worker = Proc(["transform"], env, tmp_path / "worker.log")
    procs.append(worker)
    try:
        wait_for("the drain to start", lambda: tgt.count_documents({}) >= 200, 120, proc=worker)
        capture.assert_running()
        own_kafka.kill()
        # Changes while the broker is down: capture must hold them until it is back.
        ids = [d["_id"] for d in src.find({}, {"_id": 1}).limit(100)]
        for i, _id in enumerate(ids[:50]):
            src.update_one({"_id": _id}, {"$set": {"total": 10_000 + i}})
        src.delete_many({"_id": {"$in": ids[50:70]}})
        src.insert_many([{"_id": ObjectId(), "cust_name": f"o{i}", "total": i} for i in range(200)])
        # Long enough that the worker writes prefetched events and tries to commit
        # them while no coordinator answers (the old code died there).
        time.sleep(20)
        worker.assert_running()
        capture.assert_running()
        own_kafka.start()

        report = wait_until_match(s, timeout=240)
        assert report.mismatches == 0
        assert tgt.count_documents({}) == src.count_documents({}) == seeded - 20 + 200
        assert worker.terminate() == 0, worker.text()[-3000:]
        assert capture.terminate() == 0, capture.text()[-3000:]
    finally:
        client.close()


def test_kafka_down_past_the_quarantine_wait_keeps_the_worker_alive(
    settings_kwargs: dict[str, Any], own_kafka: _Broker, tmp_path: Path, procs: list[Proc]
) -> None:
    """Broker down longer than one quarantine flush wait (60 s): worker waits, loses nothing."""
    s = load_settings(
        **{
            **settings_kwargs,
            "kafka_bootstrap": f"{own_kafka.host}:{own_kafka.port}",
            "batch_size": 20,  # 500 batches: still draining when Kafka dies
        }
    )
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    tgt = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    # Every other order has an address the spec cannot parse: each batch quarantines.
    docs = [
        {"_id": ObjectId(), "cust_name": f"c{i}", "total": i}
        | ({"address": "nowhere"} if i % 2 else {})
        for i in range(10_000)
    ]
    src.insert_many(docs)
    bad = {d["_id"] for d in docs if "address" in d}
    env = settings_env(s)
    capture = Proc(["capture"], env, tmp_path / "capture.log")
    procs.append(capture)
    worker = Proc(["transform"], env, tmp_path / "worker.log")
    procs.append(worker)
    try:
        wait_for("the drain to start", lambda: tgt.count_documents({}) >= 100, 120, proc=worker)
        own_kafka.kill()
        deadline = time.monotonic() + 75  # past the old 60 s barrier, which then crashed
        while time.monotonic() < deadline:
            worker.assert_running()
            time.sleep(1)
        own_kafka.start()

        good = len(docs) - len(bad)
        wait_for("every good order", lambda: tgt.count_documents({}) == good, 240, proc=worker)
        assert not bad & {d["_id"] for d in tgt.find({}, {"_id": 1})}

        def quarantined() -> set[Any]:
            return {e.doc_id() for e in read_quarantine(s.kafka_bootstrap, s.quarantine_topic)}

        wait_for("every bad order quarantined", lambda: quarantined() >= bad, 120, proc=worker)
        # Whether the outage met the worker inside a quarantine flush (it logs
        # quarantine.flush_waiting then) or between batches depends on how far capture
        # and the fetch queue had got; either way it must have stayed up (checked every
        # second above) and lost nothing (checked here).
        assert worker.terminate() == 0, worker.text()[-3000:]
        assert capture.terminate() == 0, capture.text()[-3000:]
    finally:
        client.close()
