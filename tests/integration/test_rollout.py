"""Rollout controller on real servers: stages, fences, audit, races, router, rollback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.rollout import audit
from stream_migrator.rollout.controller import Controller
from stream_migrator.rollout.errors import RolloutError, VersionConflictError
from stream_migrator.rollout.gate import compare_gate
from stream_migrator.rollout.plan import load_plan
from stream_migrator.rollout.reverse import (
    drain_and_verify,
    run_reverse_capture,
    run_reverse_transform,
)
from stream_migrator.rollout.stages import Stage
from stream_migrator.router import Router, stamp
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec
from tests.integration.helpers import (
    StageThread,
    cli,
    client_for,
    pipeline,
    settings_env,
    wait_until_match,
)

pytestmark = pytest.mark.integration

_PLAN = """
[plan]
evaluation_interval_s = 0.5
advance_every_s = {advance_every}
retention_s = {retention}
tiers = [
  {{ name = "internal", tenants = ["staff"] }},
  {{ name = "10%", percent = 10 }},
  {{ name = "50%", percent = 50 }},
  {{ name = "100%", percent = 100 }},
]
[collections."{source}"]
fields = []
[collections."{target}"]
fields = []
[[migration]]
name = "{name}"
spec = "orders.v1_to_v2"
source = "{source}"
target = "{target}"
[migration.fences]
max_lag_events = 100000
max_divergence_ratio = 0.05
max_error_rate = 0.5
"""


def _order(i: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "cust_name": f"c{i}",
        "address": f"{i} Main St, Town, 1000{i % 10}",
        "total": i + 0.25,
        "status": "paid",
    }


def _plan_file(
    tmp_path: Path, s: Settings, *, advance_every: float = 0, retention: float = 0
) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(
        _PLAN.format(
            name=s.migration,
            source=s.source,
            target=s.target,
            advance_every=advance_every,
            retention=retention,
        )
    )
    return path


@pytest.fixture
def migrated(settings_kwargs: dict[str, Any]) -> Iterator[tuple[Settings, Any]]:
    """40 orders migrated by a running forward pipeline; yields (settings, source collection)."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    src.insert_many([_order(i) for i in range(40)])
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        yield s, src
    client.close()


def _controller(s: Settings, plan_path: Path, **kw: Any) -> Controller:
    return Controller(load_plan(plan_path), client_for(s), s, compare_gate, "tester", **kw)


def test_stages_advance_with_audit_and_cli(migrated: tuple[Settings, Any], tmp_path: Path) -> None:
    """advance walks planned->...->cutover, halt/resume work, complete waits for retention."""
    s, _src = migrated
    plan = _plan_file(tmp_path, s, retention=1)
    env = {**settings_env(s), "SM_OPERATOR": "alice"}
    out = cli("rollout", "status", str(plan), env=env)
    assert out.returncode == 0, out.stderr
    assert "planned" in out.stdout
    seen = []
    for _ in range(7):
        out = cli("rollout", "advance", str(plan), "--reason", "go", env=env)
        assert out.returncode == 0, out.stderr
        seen.append(out.stdout.split("stage")[1].split()[0])
    assert seen == ["shadow", "verify", "canary", "canary", "ramp", "ramp", "cutover"]
    out = cli("rollout", "advance", str(plan), env=env)
    assert out.returncode == 1
    assert "complete" in out.stderr
    halted = cli("rollout", "halt", str(plan), "--reason", "look", env=env)
    assert "HALTED: look" in halted.stdout
    assert cli("rollout", "complete", str(plan), env=env).returncode == 1  # halted
    assert cli("rollout", "resume", str(plan), env=env).returncode == 0
    time.sleep(1.1)
    done = cli("rollout", "complete", str(plan), env=env)
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout
    trail = cli("audit", s.migration, env=env)
    assert trail.returncode == 0
    actions = [line.split()[2] for line in trail.stdout.splitlines() if line[:2] == "20"]
    assert actions == ["init", *["advance"] * 7, "halt", "resume", "complete"]
    assert all(" alice " in line for line in trail.stdout.splitlines() if line[:2] == "20")


def test_two_controllers_cannot_both_advance(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """Two controllers reading the same version: exactly one advance wins, one audit entry."""
    s, _src = migrated
    plan = _plan_file(tmp_path, s)
    first = _controller(s, plan)
    first.ensure_states()
    for _ in range(2):
        first.advance(s.migration)  # -> verify
    barrier = threading.Barrier(2)

    def gate(settings: Settings, *, sample: float | None = None) -> Any:
        verdict = compare_gate(settings, sample=sample)
        barrier.wait(30)  # both have read the state before either writes
        return verdict

    outcomes: list[str] = []

    def attempt() -> None:
        c = _controller(s, plan)
        c.gate = gate
        try:
            c.advance(s.migration)
            outcomes.append("won")
        except VersionConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["conflict", "won"]
    state = first.status(s.migration)
    assert state.stage == Stage.CANARY
    assert state.version == 4  # create + 2 advances + 1 winning advance
    advances = [e for e in audit.entries(first.client, s.metadata_db, s.migration)]
    assert sum(e["action"] == "advance" for e in advances) == 3


def test_injected_divergence_halts_and_reverts_within_one_interval(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """A divergence fence breach halts the run loop and puts exposure back to the safe tier."""
    s, _src = migrated
    plan = _plan_file(tmp_path, s)
    c = _controller(s, plan)
    c.ensure_states()
    for _ in range(5):
        c.advance(s.migration)  # shadow, verify, internal, 10%, 50%
    assert c.status(s.migration).percentage == 50
    client = client_for(s)
    tgt = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    ids = [d["_id"] for d in tgt.find({}, {"_id": 1}).limit(5)]
    tgt.update_many({"_id": {"$in": ids}}, {"$set": {"customer.name": "corrupted"}})
    stop = threading.Event()
    halted_at: list[float] = []

    def loop() -> None:
        while not stop.is_set():
            c.tick()
            if c.status(s.migration).halted:
                halted_at.append(time.monotonic())
                return
            stop.wait(c.plan.evaluation_interval_s)

    injected = time.monotonic()
    worker = threading.Thread(target=loop)
    worker.start()
    worker.join(30)
    stop.set()
    assert halted_at, "the controller did not halt"
    state = c.status(s.migration)
    assert state.percentage == 10  # back to the last safe tier
    assert state.stage == Stage.CANARY
    assert "divergence_ratio" in (state.halt_reason or "")
    # one evaluation: the tick that saw it (compare time + interval)
    assert halted_at[0] - injected < 10
    trail = audit.entries(c.client, s.metadata_db, s.migration)
    assert trail[-1]["action"] == "fence_breach"
    assert trail[-1]["details"]["breaches"][0]["fence"] == "divergence_ratio"
    with pytest.raises(RolloutError, match="halted"):
        c.advance(s.migration)
    client.close()


def test_router_routes_ten_percent_of_100k_keys_sticky(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """At 10% the router sends 10% +- 1% of 100,000 keys to new, the same keys every time."""
    s, _src = migrated
    plan = _plan_file(tmp_path, s)
    c = _controller(s, plan)
    c.ensure_states()
    with Router(
        s.mongo_uri.get_secret_value(), s.migration, metadata_db=s.metadata_db, poll_interval_s=0.2
    ) as router:
        assert router.read_target("k").side == "old"
        for _ in range(4):
            c.advance(s.migration)  # shadow, verify, internal, 10%
        deadline = time.monotonic() + 10
        while (
            router.state is None or router.state.percentage != 10
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert router.state is not None
        assert router.state.percentage == 10
        keys = [f"order-{i}" for i in range(100_000)]
        first = [router.read_target(k).side for k in keys]
        share = first.count("new") / len(keys)
        assert 0.09 <= share <= 0.11, share
        assert [router.read_target(k).side for k in keys[:10_000]] == first[:10_000]
        assert router.read_target("x", tenant="staff").side == "new"
        new_key = keys[first.index("new")]
        old_key = keys[first.index("old")]
        assert router.cache_key("order", new_key) != router.cache_key("order", old_key).replace(
            old_key, new_key
        )
        assert router.write_target(new_key).namespace == s.target


def test_rollback_from_canary_keeps_writes_made_on_new(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """Writes on the new path during canary reach old through the reverse stream; none lost."""
    s, src = migrated
    plan = _plan_file(tmp_path, s)
    c = _controller(s, plan, drainer=lambda st: drain_and_verify(st, timeout_s=60))
    c.ensure_states()
    reverse = [StageThread(run_reverse_capture, s), StageThread(run_reverse_transform, s)]
    for t in reverse:
        t.start()
    try:
        for _ in range(5):
            c.advance(s.migration)  # ... 50%
        client = client_for(s)
        new = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
        with Router(client, s.migration, metadata_db=s.metadata_db, background=False) as router:
            moved = []
            for doc in src.find({}):
                if router.write_target(doc["_id"]).side == "new":
                    target = new.find_one({"_id": doc["_id"]})
                    assert target is not None
                    target["customer"]["name"] = "written-on-new"
                    new.replace_one({"_id": doc["_id"]}, stamp(target))
                    moved.append(doc["_id"])
        assert moved
        fresh = _order(999)
        new.insert_one(stamp(get_spec(s.spec).transform(fresh)))
        state = c.rollback(s.migration, "test")
        assert state.stage == Stage.ROLLED_BACK
        assert state.read_path == "old"
        for _id in moved:
            got = src.find_one({"_id": _id})
            assert got is not None
            assert got["cust_name"] == "written-on-new"
        assert src.find_one({"_id": fresh["_id"]}) is not None
        last = audit.entries(client, s.metadata_db, s.migration)[-1]
        assert last["action"] == "rollback"
        assert last["details"]["mismatches"] == 0
        client.close()
    finally:
        for t in reverse:
            t.stop()
