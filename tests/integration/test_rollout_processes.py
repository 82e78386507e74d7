"""`rollout run` and `rollout reverse` as real processes: /healthz, /metrics, SIGTERM, logs."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pymongo.uri_parser import parse_uri

from stream_migrator.infra import free_port
from stream_migrator.rollout.reverse import reverse_settings, reverse_stream_problem
from stream_migrator.rollout.state import StateStore
from stream_migrator.router import stamp
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec
from tests.integration.helpers import cli, client_for, settings_env
from tests.integration.processes import Proc, health, http_get, metric, wait_for
from tests.integration.proxy import TcpProxy
from tests.integration.rollout_plans import order, plan_file

pytestmark = pytest.mark.integration


def test_rollout_run_serves_health_and_metrics_and_stops_on_sigterm(
    forward_migrated: Settings, tmp_path: Path, procs: list[Proc]
) -> None:
    """`rollout run` answers /healthz, exports its stage and fences, exits 0 on SIGTERM."""
    s = forward_migrated
    port = free_port()
    plan = plan_file(tmp_path, s, advance_every=0.5)
    env = {**settings_env(s), "SM_METRICS_PORT": str(port), "SM_OPERATOR": "ctl"}
    run = Proc(["rollout", "run", str(plan)], env, tmp_path / "run.log")
    procs.append(run)
    m = s.migration

    wait_for("/healthz to answer 200", lambda: health(port)[0] == 200, proc=run)
    assert health(port)[1]["component"] == "rollout"
    # The schedule moves planned -> shadow -> verify (fences hold, the gate is READY);
    # the step into canary is refused: rollback is required and no reverse stream runs.
    wait_for(
        "the controller to reach verify",
        lambda: metric(port, "sm_rollout_stage", migration=m) == 2,
        proc=run,
    )
    wait_for(
        "the refused step into canary",
        lambda: any(
            e["event"] == "rollout.not_advanced" and "reverse stream is not ready" in e["reason"]
            for e in run.events()
        ),
        proc=run,
    )
    assert metric(port, "sm_rollout_transitions_total", migration=m, action="advance") == 2
    assert metric(port, "sm_rollout_halted", migration=m) == 0
    assert metric(port, "sm_rollout_exposure_percent", migration=m) == 0
    assert metric(port, "sm_rollout_fence_value", migration=m, fence="lag_events") == 0
    assert metric(port, "sm_rollout_fence_value", migration=m, fence="divergence_ratio") == 0
    assert metric(port, "sm_rollout_fence_breaches_total", migration=m) is None
    assert health(port, "/readyz")[0] == 200
    client = client_for(s)
    try:
        state = StateStore(client, s.metadata_db).get(m)
    finally:
        client.close()
    assert str(state.stage) == "verify"
    assert state.updated_by == "ctl"
    # /progress: the status document of each planned migration, as `status --json` prints it.
    code, body = http_get(port, "/progress")
    assert code == 200, body
    served = json.loads(body)[m]
    shown = json.loads(cli("status", "--json", env=settings_env(s)).stdout)
    assert served["migration"] == shown["migration"] == m
    assert served["rollout"]["stage"] == shown["rollout"]["stage"] == "verify"
    assert served["capture"]["phase"] == shown["capture"]["phase"] == "streaming"
    assert served["transform"]["lag_events"] == shown["transform"]["lag_events"] == 0
    # The controller's gate reconciles now and then, so the verdict (and with it
    # can_cutover) may move between the two readings; the shape may not.
    assert set(served) == set(shown)
    assert isinstance(served["can_cutover"], bool)
    assert served["quarantine"]["count"] == shown["quarantine"]["count"] == 0

    assert run.terminate() == 0, run.text()[-4000:]
    assert http_get(port, "/healthz")[0] == 0  # the HTTP server is closed with the process
    events = run.events()
    names = [e["event"] for e in events]
    assert names[0] == "rollout.start"
    assert names[-1] == "rollout.stopped", names[-5:]
    assert events[-1]["reason"] == "SIGTERM"
    assert events[0]["settings"]["migration"] == s.migration
    listening = next(e for e in events if e["event"] == "http.listening")
    assert listening["port"] == port
    assert [e["to"] for e in events if e["event"] == "rollout.advanced"] == ["shadow", "verify"]


@pytest.mark.usefixtures("write_guard")  # both guard modes
def test_rollout_reverse_carries_new_path_writes_to_old_and_stops_on_sigterm(
    settings_kwargs: dict[str, Any], tmp_path: Path, procs: list[Proc]
) -> None:
    """`rollout reverse` on a fixed port: /healthz, both stages' metrics, writes on new
    reach old in the old shape, SIGTERM stops both stages and exits 0."""
    s = load_settings(**settings_kwargs)
    spec = get_spec(s.spec)
    client = client_for(s)
    old = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    new = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    docs = [order(i) for i in range(10)]
    old.insert_many(docs)
    new.insert_many([spec.transform(d) for d in docs])  # as migrated: both sides agree
    port = free_port()
    plan = plan_file(tmp_path, s)
    env = {**settings_env(s), "SM_METRICS_PORT": str(port)}
    rev = Proc(["rollout", "reverse", str(plan), s.migration], env, tmp_path / "reverse.log")
    procs.append(rev)
    r = reverse_settings(s).migration

    wait_for("/healthz to answer 200", lambda: health(port)[0] == 200, proc=rev)
    assert health(port)[1]["component"] == "reverse-transform"
    # What the controller asks before canary: a start position and a worker in the group.
    wait_for("the reverse stream to be ready", lambda: reverse_stream_problem(s) is None, proc=rev)
    # The capture half runs in the same process; its metrics are on the same port.
    wait_for(
        "the reverse capture's metrics",
        lambda: metric(port, "sm_ready", migration=r, component="capture") == 1,
        proc=rev,
    )

    # Application writes on the new path: a stamped update, a stamped insert, a delete.
    moved = new.find_one({"_id": docs[3]["_id"]})
    assert moved is not None
    moved["customer"]["name"] = "written-on-new"
    new.replace_one({"_id": docs[3]["_id"]}, stamp(moved))
    fresh = order(99)
    new.insert_one(stamp(spec.transform(fresh)))
    new.delete_one({"_id": docs[7]["_id"]})

    def arrived() -> bool:
        updated = old.find_one({"_id": docs[3]["_id"]}) or {}
        return (
            updated.get("cust_name") == "written-on-new"
            and old.find_one({"_id": fresh["_id"]}) is not None
            and old.find_one({"_id": docs[7]["_id"]}) is None
        )

    wait_for("the writes on new to reach old", arrived, proc=rev)
    updated = old.find_one({"_id": docs[3]["_id"]}, {"_sm": 0})
    assert updated == {**docs[3], "cust_name": "written-on-new"}  # the old shape, nothing else
    inserted = old.find_one({"_id": fresh["_id"]}, {"_sm": 0})
    assert inserted == fresh
    assert isinstance(inserted["total"], float)
    assert "_sm" in (old.find_one({"_id": fresh["_id"]}) or {})  # the version guard's field
    assert old.count_documents({}) == 10  # 10 - 1 deleted + 1 inserted
    # Both counters move after their commit (capture's checkpoint, the worker's offsets),
    # which can come just after the writes are visible in old: wait, do not race.
    wait_for(
        "the reverse capture to count its 3 events (at its checkpoint)",
        lambda: metric(port, "sm_events_captured_total", migration=r) == 3,
        proc=rev,
    )
    wait_for(
        "the reverse worker to count its 3 writes (after its commit)",
        lambda: metric(port, "sm_events_applied_total", migration=r, outcome="written") == 3,
        proc=rev,
    )
    wait_for(  # offsets are committed after the writes, and the gauge follows
        "the reverse worker's lag gauge to reach 0",
        lambda: metric(port, "sm_consumer_lag_events", migration=r) == 0,
        proc=rev,
    )

    assert rev.terminate() == 0, rev.text()[-4000:]
    events = rev.events()
    stops = {e["event"]: e for e in events if e["event"].endswith(".stopped")}
    assert set(stops) == {"capture.stopped", "transform.stopped", "reverse.stopped"}
    assert {e["reason"] for e in stops.values()} == {"SIGTERM"}
    assert stops["capture.stopped"]["migration"] == r
    assert stops["transform.stopped"]["applied"] == 3
    assert stops["reverse.stopped"]["failed"] is False
    assert not [e for e in events if e["level"] == "error"]
    listening = {e["process"]: e["port"] for e in events if e["event"] == "http.listening"}
    assert listening["reverse-transform"] == port
    assert listening["capture"] != port
    client.close()


def test_rollout_reverse_exits_nonzero_when_a_stage_fails(
    settings_kwargs: dict[str, Any], tmp_path: Path, procs: list[Proc]
) -> None:
    """A reverse stage that dies (its metrics port taken) stops the process with exit 1."""
    s = load_settings(**settings_kwargs)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**settings_env(s), "SM_METRICS_PORT": str(port)}
        rev = Proc(
            ["rollout", "reverse", str(plan_file(tmp_path, s)), s.migration],
            env,
            tmp_path / "reverse.log",
        )
        procs.append(rev)
        try:
            code = rev.popen.wait(45)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running:\n{rev.text()[-4000:]}") from None
    assert code == 1, rev.text()[-4000:]
    events = rev.events()
    failed = next(e for e in events if e["event"] == "reverse.stage_failed")
    assert failed["stage"] == "run_reverse_transform"
    assert "Address already in use" in failed["exception"]
    stopped = events[-1]
    assert stopped["event"] == "reverse.stopped"
    assert stopped["failed"] is True
    assert stopped["reason"] == "a reverse stage ended: run_reverse_transform"
    # The surviving capture stage was stopped cleanly, not abandoned.
    assert any(e["event"] == "capture.stopped" for e in events), rev.text()[-4000:]


def test_rollout_run_stays_alive_but_unready_while_mongodb_is_unreachable(
    settings_kwargs: dict[str, Any], tmp_path: Path, procs: list[Proc]
) -> None:
    """A MongoDB outage makes the controller unready (/readyz 503), never dead (/healthz 200);
    it recovers when MongoDB is back and still exits 0 on SIGTERM."""
    s = load_settings(**settings_kwargs)
    proxy = TcpProxy(parse_uri(s.mongo_uri.get_secret_value())["nodelist"][0])
    port = free_port()
    env = {
        **settings_env(s),
        "SM_MONGO_URI": proxy.uri,
        "SM_METRICS_PORT": str(port),
    }
    run = Proc(["rollout", "run", str(plan_file(tmp_path, s))], env, tmp_path / "run.log")
    procs.append(run)
    try:
        wait_for("/readyz to answer 200", lambda: health(port, "/readyz")[0] == 200, proc=run)
        proxy.cut()
        wait_for(
            "/readyz to answer 503",
            lambda: health(port, "/readyz")[0] == 503,
            timeout=40,
            proc=run,
        )
        status, body = health(port)
        assert status == 200, body  # alive: a liveness restart here would be a crash loop
        assert body["status"] == "backpressure"
        assert any(e["event"] == "rollout.tick_failed" for e in run.events())
        proxy.restore()
        wait_for(
            "/readyz to answer 200 again",
            lambda: health(port, "/readyz")[0] == 200,
            timeout=40,
            proc=run,
        )
        assert run.terminate() == 0, run.text()[-4000:]
    finally:
        proxy.cut()
    last = run.events()[-1]
    assert (last["event"], last["reason"]) == ("rollout.stopped", "SIGTERM")
