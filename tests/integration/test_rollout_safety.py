"""Rollout fails closed on real servers: unmeasured fences hold, rollback waits for routers."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.uri_parser import parse_uri

from stream_migrator.rollout import audit
from stream_migrator.rollout.controller import Controller
from stream_migrator.rollout.errors import RolloutError
from stream_migrator.rollout.gate import GateVerdict, compare_gate
from stream_migrator.rollout.leases import LeaseStore
from stream_migrator.rollout.plan import load_plan
from stream_migrator.rollout.reverse import drain_and_verify
from stream_migrator.rollout.stages import Stage
from stream_migrator.router import Router, stamp
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec
from tests.integration.helpers import client_for, pipeline, wait_until_match
from tests.integration.proxy import TcpProxy
from tests.integration.rollout_plans import order, plan_file, start_reverse_stream, stop_all

pytestmark = pytest.mark.integration

_P99_PLAN = """
[plan]
tiers = [{{ name = "10%", percent = 10 }}, {{ name = "all", percent = 100 }}]
[collections."{source}"]
fields = []
[collections."{target}"]
fields = []
[[migration]]
name = "{name}"
spec = "orders.v1_to_v2"
source = "{source}"
target = "{target}"
metrics_urls = ["http://127.0.0.1:9/metrics"]
[migration.fences]
max_p99_apply_seconds = 2.0
{on_missing}
[migration.rollback]
required = false
"""


def _ready(settings: Settings, *, sample: float | None = None) -> GateVerdict:
    """A reconciler verdict of READY: this test is about the fences, not the gate."""
    del settings, sample
    return GateVerdict(ready=True)


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def migrated(settings_kwargs: dict[str, Any]) -> Iterator[tuple[Settings, Any]]:
    """40 orders migrated by a running forward pipeline, the reverse stream running."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    src.insert_many([order(i) for i in range(40)])
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        reverse = start_reverse_stream(s)  # as `rollout reverse` does, before writes on new
        try:
            yield s, src
        finally:
            stop_all(reverse)
    client.close()


def _controller(s: Settings, plan: Path, **kw: Any) -> Controller:
    return Controller(
        load_plan(plan),
        client_for(s),
        s,
        compare_gate,
        "tester",
        drainer=lambda st: drain_and_verify(st, timeout_s=60),
        **kw,
    )


def _stale_router(s: Settings, client: Any) -> Router:
    """A router that refreshes only when the test says so (it has not seen a rollback yet)."""
    return Router(
        client,
        s.migration,
        metadata_db=s.metadata_db,
        background=False,
        lease_s=300.0,
        ack_delay_s=0.0,
    )


def _key_on_new(router: Router, src: Any) -> Any:
    for doc in src.find({}, {"_id": 1}):
        if router.read_target(doc["_id"]).side == "new":  # writes follow the same rule
            return doc["_id"]
    raise AssertionError("no key routes to new")


def _write_on_new(client: Any, router: Router, key: Any, name: str) -> None:
    target = router.write_target(key)
    assert target.side == "new"
    coll = client[target.db][target.collection]
    doc = coll.find_one({"_id": key})
    assert doc is not None
    doc["customer"]["name"] = name
    coll.replace_one({"_id": key}, stamp(doc))


def test_fence_without_measurement_holds_the_stage_and_says_why(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """An unreachable metrics URL holds the stage (fence_hold, hold_reason) instead of passing."""
    s = load_settings(**settings_kwargs)
    names = {"name": s.migration, "source": s.source, "target": s.target}
    plan = tmp_path / "plan.toml"
    plan.write_text(_P99_PLAN.format(**names, on_missing=""))
    c = Controller(load_plan(plan), client_for(s), s, _ready, "tester")
    c.ensure_states()
    c.advance(s.migration)  # planned -> shadow (no fences before shadow)
    with pytest.raises(RolloutError, match=r"p99_apply_seconds have no measurement"):
        c.advance(s.migration)
    state = c.status(s.migration)
    assert state.stage == Stage.SHADOW
    assert "p99_apply_seconds" in (state.hold_reason or "")
    assert 'on_missing = "skip"' in (state.hold_reason or "")
    c.tick()  # the run loop holds as well, without a second entry for the same cause
    trail = audit.entries(c.client, s.metadata_db, s.migration)
    assert [e["action"] for e in trail] == ["init", "advance", "fence_hold"]
    assert trail[-1]["details"]["missing"] == ["p99_apply_seconds"]
    assert c.status(s.migration).stage == Stage.SHADOW

    plan.write_text(_P99_PLAN.format(**names, on_missing='on_missing = "skip"'))
    skipping = Controller(load_plan(plan), client_for(s), s, _ready, "tester")
    after = skipping.advance(s.migration)
    assert after.stage == Stage.VERIFY
    assert after.hold_reason is None
    last = audit.entries(c.client, s.metadata_db, s.migration)[-1]
    assert last["action"] == "advance"
    assert last["details"]["unmeasured"] == ["p99_apply_seconds"]


@pytest.mark.usefixtures("write_guard")  # both guard modes
def test_rollback_stays_rolling_back_until_a_stale_router_acknowledges(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """A router that has not refreshed holds rollback in rolling_back (routing old) till it acks."""
    s, _src = migrated
    c = _controller(s, plan_file(tmp_path, s), router_wait_s=1.0)
    c.ensure_states()
    for _ in range(5):
        c.advance(s.migration)  # shadow, verify, internal, 10%, 50%
    client = client_for(s)
    router = _stale_router(s, client)
    try:
        assert router.state is not None
        assert router.state.percentage == 50
        for _ in range(2):  # a retry does not finish it either while the router is behind
            with pytest.raises(RolloutError, match="have not acknowledged the old-only state"):
                c.rollback(s.migration, "test")
            state = c.status(s.migration)
            assert state.stage == Stage.ROLLING_BACK
            assert state.read_path == "old"  # routing old, but not done
            assert state.halted
        assert router.refresh()  # it applies (and, ack_delay_s=0, acknowledges) old-only
        done = c.rollback(s.migration, "test")
        assert done.stage == Stage.ROLLED_BACK
        trail = audit.entries(client, s.metadata_db, s.migration)
        actions = [e["action"] for e in trail]
        assert actions[-5:] == [
            "rollback_start",
            "rollback_route_old",
            "rollback_blocked",
            "rollback_blocked",
            "rollback",
        ], actions
        assert trail[-3]["details"]["routers_pending"][0].startswith(router.router_id)
        assert trail[-1]["details"]["routers_acknowledged"] == [router.router_id]
        assert trail[-1]["details"]["mismatches"] == 0
    finally:
        router.close()
        client.close()
    assert LeaseStore(client_for(s), s.metadata_db).of(s.migration) == []  # released on close


@pytest.mark.usefixtures("write_guard")  # both guard modes
def test_write_on_new_by_a_router_before_it_acknowledges_is_carried_back_and_verified(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """Old-only routing is on, one router still writes new: rollback carries that write back."""
    s, src = migrated
    c = _controller(s, plan_file(tmp_path, s))  # waits for the router as long as its lease
    c.ensure_states()
    for _ in range(5):
        c.advance(s.migration)  # ... 50%
    client = client_for(s)
    router = _stale_router(s, client)
    outcome: list[Any] = []

    def roll_back() -> None:
        try:
            outcome.append(c.rollback(s.migration, "test"))
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)

    worker = threading.Thread(target=roll_back, daemon=True)
    try:
        key = _key_on_new(router, src)
        worker.start()
        _wait("old-only routing", lambda: c.status(s.migration).read_path == "old", timeout=120)
        assert c.status(s.migration).stage == Stage.ROLLING_BACK
        # The router has not refreshed: it still sends this key, and a new one, to new.
        _write_on_new(client, router, key, "late-on-new")
        fresh = order(4242)
        target = router.write_target(fresh["_id"])
        if target.side == "new":
            client[target.db][target.collection].insert_one(
                stamp(get_spec(s.spec).transform(fresh))
            )
        else:
            client[target.db][target.collection].insert_one(fresh)
        time.sleep(1.0)
        assert not outcome, outcome  # still waiting for this router
        assert router.refresh()
        worker.join(120)
        assert outcome, "rollback did not finish after the router acknowledged"
        done = outcome[0]
        assert not isinstance(done, Exception), done
        assert done.stage == Stage.ROLLED_BACK
        got = src.find_one({"_id": key})
        assert got is not None
        assert got["cust_name"] == "late-on-new"
        assert src.find_one({"_id": fresh["_id"]}) is not None
        last = audit.entries(client, s.metadata_db, s.migration)[-1]
        assert last["action"] == "rollback"
        assert last["details"]["mismatches"] == 0
        assert last["details"]["compared"] == 41  # the late insert is in the final compare
    finally:
        router.close()
        worker.join(120)
        client.close()


@pytest.mark.usefixtures("write_guard")  # both guard modes
def test_rollback_proceeds_once_an_unreachable_routers_lease_expires(
    migrated: tuple[Settings, Any], tmp_path: Path
) -> None:
    """A router cut off from MongoDB never acknowledges; rollback finishes after its lease."""
    s, src = migrated
    c = _controller(s, plan_file(tmp_path, s))
    c.ensure_states()
    for _ in range(5):
        c.advance(s.migration)  # ... 50%
    host, port = parse_uri(s.mongo_uri.get_secret_value())["nodelist"][0]
    proxy = TcpProxy((host, port))
    router = Router(
        proxy.uri,
        s.migration,
        metadata_db=s.metadata_db,
        poll_interval_s=0.2,
        timeout_ms=1_000,
        lease_s=3.0,
    )
    try:
        _wait("the router's first state and lease", lambda: router.state is not None)
        _wait("the router's lease", router.lease_valid)
        key = _key_on_new(router, src)
        proxy.cut()
        started = time.monotonic()
        done = c.rollback(s.migration, "test")
        assert done.stage == Stage.ROLLED_BACK
        assert time.monotonic() - started >= 3.0  # it waited for the lease, not less
        assert not router.lease_valid()
        state = router.state
        assert state is not None
        assert state.percentage == 50  # it never saw the rollback ...
        with pytest.raises(RolloutError, match="lease"):
            router.write_target(key)  # ... and refuses the write to new by itself
        last = audit.entries(c.client, s.metadata_db, s.migration)[-1]
        assert last["action"] == "rollback"
        assert last["details"]["routers_expired"] == [router.router_id]
    finally:
        router.close()
        proxy.cut()


def test_audit_trail_keeps_append_order_within_one_millisecond(
    settings_kwargs: dict[str, Any],
) -> None:
    """Entries written in the same millisecond (BSON datetimes hold no more) read back in order.

    A transition's entry has a string id (``<migration>@<version>``) and an operator
    entry an ObjectId; a tie on ``at`` broken by ``_id`` put every transition of that
    millisecond before the plain entries (a string sorts before an ObjectId in BSON).
    """
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    at = dt.datetime(2026, 12, 2, 12, 0, 0, 123000, tzinfo=dt.UTC)
    plain = {"migration": s.migration, "operator": "tester", "at": at}
    audit.record(client, s.metadata_db, action="init", **plain)
    audit.record(client, s.metadata_db, action="advance", entry_id=f"{s.migration}@1", **plain)
    audit.record(client, s.metadata_db, action="fence_hold", **plain)
    audit.record(client, s.metadata_db, action="advance", entry_id=f"{s.migration}@2", **plain)
    actions = [e["action"] for e in audit.entries(client, s.metadata_db, s.migration)]
    assert actions == ["init", "advance", "fence_hold", "advance"]
    client.close()
