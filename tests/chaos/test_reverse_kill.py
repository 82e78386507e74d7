"""`rollout reverse` killed with SIGKILL mid-stream and restarted loses no new-path write."""

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

from stream_migrator.rollout.reverse import drain_and_verify, reverse_stream_problem
from stream_migrator.router import stamp, stamp_update
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec
from tests.integration.helpers import REPO, client_for, pipeline, settings_env, wait_until_match
from tests.integration.rollout_plans import order, plan_file

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


class _Reverse:
    """`stream-migrator rollout reverse PLAN MIGRATION` as a child, one log file per start."""

    def __init__(self, plan: Path, s: Settings, tmp_path: Path) -> None:
        self._args = ["rollout", "reverse", str(plan), s.migration]
        self._env = {**os.environ, **settings_env(s), "SM_METRICS_PORT": "0"}
        self._tmp = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self) -> None:
        log = self._tmp / f"reverse-{len(self.started)}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stream_migrator", *self._args],
                cwd=REPO,
                env=self._env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.started.append((proc, log))

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.started[-1][0]

    def text(self) -> str:
        return self.started[-1][1].read_text(errors="replace")

    def tails(self) -> str:
        """The end of every start's log, for failure messages."""
        return "\n".join(
            f"--- {log.name} (exit {p.poll()}) ---\n{log.read_text(errors='replace')[-3000:]}"
            for p, log in self.started
        )

    def events(self) -> list[str]:
        """The structured log events of the current process (librdkafka's lines are not JSON)."""
        return [json.loads(line)["event"] for line in self.text().splitlines() if line[:1] == "{"]

    def wait_for(self, what: str, cond: Any, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            code = self.proc.poll()
            assert code is None, f"rollout reverse exited with {code}:\n{self.tails()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.tails()}"
            time.sleep(0.2)

    def sigkill_and_restart(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no drain, no final commit, no checkpoint
        self.proc.wait(30)
        self.start()

    def kill_all(self) -> None:
        for p, _ in self.started:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.mark.usefixtures("write_guard")  # both guard modes, as SM_WRITE_GUARD
def test_reverse_sigkill_mid_stream_loses_no_new_path_write(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """Two SIGKILLs of `rollout reverse` during writes on new: every write reaches old."""
    s = load_settings(**settings_kwargs)
    spec = get_spec(s.spec)
    client = client_for(s)
    old = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    new = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    seeded = [order(i) for i in range(300)]
    old.insert_many(seeded)
    reverse = _Reverse(plan_file(tmp_path, s), s, tmp_path)
    # _id -> the last customer name written on new, or None once deleted there.
    expected: dict[Any, str | None] = {d["_id"]: d["cust_name"] for d in seeded}
    stop_writes = threading.Event()
    errors: list[BaseException] = []
    written = [0]

    def writer() -> None:
        """The application after cutover: every write goes to new, stamped."""
        rnd = random.Random(7)
        live = [d["_id"] for d in seeded]
        i = 0
        try:
            while not stop_writes.is_set():
                i += 1
                name = f"w{i}"
                if i % 11 == 0 and len(live) > 100:
                    key = live.pop(rnd.randrange(len(live)))
                    new.delete_one({"_id": key})
                    expected[key] = None
                elif i % 5 == 0:
                    doc = spec.transform(order(1000 + i))
                    doc["customer"]["name"] = name
                    new.insert_one(stamp(doc))
                    live.append(doc["_id"])
                    expected[doc["_id"]] = name
                elif i % 3 == 0:
                    key = rnd.choice(live)
                    new.update_one({"_id": key}, stamp_update({"$set": {"customer.name": name}}))
                    expected[key] = name
                else:
                    key = rnd.choice(live)
                    current = new.find_one({"_id": key})
                    assert current is not None, f"{key} vanished from new"
                    current["customer"]["name"] = name
                    new.replace_one({"_id": key}, stamp(current))
                    expected[key] = name
                written[0] = i
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test below
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    try:
        with pipeline(s) as stages:
            wait_until_match(s, timeout=60, stages=stages)
            reverse.start()
            reverse.wait_for(
                "the reverse stream to be ready", lambda: reverse_stream_problem(s) is None
            )
            thread.start()
            time.sleep(2.0)
            reverse.sigkill_and_restart()
            # Kill the second one once both of its stages have started, mid-resume.
            reverse.wait_for(
                "the restarted stages to start",
                lambda: {"capture.start", "reverse.start"} <= set(reverse.events()),
            )
            time.sleep(1.5)
            reverse.sigkill_and_restart()
            time.sleep(2.0)
            stop_writes.set()
            thread.join(10)
            assert not thread.is_alive(), "the writer did not stop"
            assert not errors, errors
            ok, details = drain_and_verify(s, timeout_s=120)
            assert reverse.proc.poll() is None, reverse.tails()
            assert ok, f"{details}\n{reverse.tails()}"
            for stage in stages.values():
                assert stage.error is None, stage.error
        assert written[0] > 300, "the writer did not write during the kills"
        in_old = {d["_id"]: d.get("cust_name") for d in old.find({}, {"cust_name": 1})}
        in_new = {d["_id"]: d["customer"]["name"] for d in new.find({}, {"customer.name": 1})}
        want = {k: v for k, v in expected.items() if v is not None}
        lost_in_old = {k: (v, in_old.get(k)) for k, v in want.items() if in_old.get(k) != v}
        assert not lost_in_old, f"{len(lost_in_old)} ids differ in old (want, got): " + str(
            dict(list(lost_in_old.items())[:10])
        )
        assert not {k for k in in_old if k not in want}, "deleted (or unknown) ids still in old"
        assert in_new == want  # the forward stream never overwrote an application write on new
        assert len(want) < len(expected)  # some deletes happened
        reverse.proc.send_signal(signal.SIGTERM)
        try:
            code = reverse.proc.wait(45)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within 45s of SIGTERM:\n{reverse.tails()}") from None
        assert code == 0, reverse.tails()
        assert reverse.events()[-1] == "reverse.stopped", reverse.tails()
        assert len(reverse.started) == 3
    finally:
        stop_writes.set()
        reverse.kill_all()
        client.close()
