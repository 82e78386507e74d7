"""The router SDK on a real server: MongoDB outages (through a TCP proxy), leases, no state."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from stream_migrator.rollout.stages import Stage
from stream_migrator.rollout.state import RolloutState, StateStore
from stream_migrator.router import NoRolloutStateError, Router, RouterLeaseExpiredError, Target
from tests.integration.proxy import TcpProxy

pytestmark = pytest.mark.integration

KEYS = [f"order-{i}" for i in range(200)]


@pytest.fixture
def proxy(mongo_uri: str) -> Iterator[TcpProxy]:
    """A proxy in front of the test MongoDB server, cut at the end."""
    host, port = parse_uri(mongo_uri)["nodelist"][0]
    p = TcpProxy((host, port))
    yield p
    p.cut()


@pytest.fixture
def direct(mongo_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    """A client straight to the server (not through the proxy): the operator's side."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {
        "migration": f"t-{unique}",
        "metadata_db": f"meta_{unique}",
        "old": f"db_{unique}.orders",
        "new": f"db_{unique}.orders_v2",
    }


def _create_state(
    direct: MongoClient[dict[str, Any]], names: dict[str, str], **changes: Any
) -> RolloutState:
    """Create the migration's state document (planned), then apply ``changes`` if any."""
    store = StateStore(direct, names["metadata_db"])
    fresh = RolloutState(names["migration"], names["old"], names["new"])
    assert store.create(fresh, "tester")
    state = store.get(names["migration"])
    return store.swap(state, "tester", **changes) if changes else state


def _change_state(
    direct: MongoClient[dict[str, Any]], names: dict[str, str], **changes: Any
) -> RolloutState:
    store = StateStore(direct, names["metadata_db"])
    return store.swap(store.get(names["migration"]), "tester", **changes)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _has_version(router: Router, version: int) -> Callable[[], bool]:
    def check() -> bool:
        state = router.state
        return state is not None and state.version == version

    return check


def _assert_refused(port: int) -> None:
    """Nothing listens on ``port`` any more: the outage is real, not just slow."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_router_keeps_last_state_through_outage_and_follows_after_restore(
    proxy: TcpProxy, direct: MongoClient[dict[str, Any]], names: dict[str, str]
) -> None:
    """MongoDB cut: the last state keeps being served; a change made meanwhile arrives after."""
    split = _create_state(direct, names, stage=Stage.CANARY, tier=0, percentage=50.0)
    with Router(
        proxy.uri,
        names["migration"],
        metadata_db=names["metadata_db"],
        timeout_ms=300,
        poll_interval_s=0.2,
    ) as router:
        _wait_for(_has_version(router, split.version), "the router read the state")
        reads = {k: router.read_target(k) for k in KEYS}
        assert {t.side for t in reads.values()} == {"old", "new"}  # split at 50%
        assert {t.namespace for t in reads.values()} == {names["old"], names["new"]}
        assert {k: router.write_target(k) for k in KEYS} == reads

        proxy.cut()
        _assert_refused(proxy.port)
        assert router.refresh() is False
        assert {k: router.read_target(k) for k in KEYS} == reads
        assert {k: router.write_target(k) for k in KEYS} == reads

        cutover = _change_state(direct, names, stage=Stage.CUTOVER, percentage=100.0)
        assert router.refresh() is False
        state = router.state
        assert state is not None
        assert state.version == split.version  # it cannot know about the cutover yet
        assert {k: router.read_target(k) for k in KEYS} == reads
        assert {k: router.write_target(k) for k in KEYS} == reads

        proxy.restore()
        # No refresh() from here: the router's own thread has to find the server again.
        _wait_for(_has_version(router, cutover.version), "the router followed after restore")
        on_new = Target("new", names["new"], "v2")
        assert {router.read_target(k) for k in KEYS} == {on_new}
        assert {router.write_target(k) for k in KEYS} == {on_new}
        # 300 ms timeouts: under load one refresh may time out; one must succeed.
        _wait_for(router.refresh, "a refresh succeeds after restore")


def test_router_that_never_reached_mongodb_serves_fallback_or_raises(
    proxy: TcpProxy, direct: MongoClient[dict[str, Any]], names: dict[str, str]
) -> None:
    """Unreachable since start: the fallback namespace on old, else a clear error; then state."""
    cutover = _create_state(direct, names, stage=Stage.CUTOVER, percentage=100.0)
    proxy.cut()
    _assert_refused(proxy.port)
    common: dict[str, Any] = {
        "metadata_db": names["metadata_db"],
        "timeout_ms": 300,
        "poll_interval_s": 0.2,
    }
    with (
        Router(
            proxy.uri, names["migration"], fallback_namespace=names["old"], **common
        ) as with_fallback,
        Router(proxy.uri, names["migration"], **common) as without,
    ):
        assert with_fallback.state is None
        assert with_fallback.refresh() is False
        fallback = Target("old", names["old"], "unknown")
        assert with_fallback.read_target("k") == fallback
        assert with_fallback.write_target("k", tenant="acme") == fallback
        for ask in (without.read_target, without.write_target):
            with pytest.raises(NoRolloutStateError) as raised:
                ask("k")
            message = str(raised.value)
            assert names["migration"] in message
            assert "MongoDB has not answered" in message
            assert "fallback_namespace" in message

        proxy.restore()
        for router in (with_fallback, without):
            _wait_for(_has_version(router, cutover.version), "the router read the state")
            # The state is applied before the heartbeat that takes the lease is written
            # (a rollback to old must apply even when the heartbeat fails): until then a
            # write to new is refused, so wait for the lease too.
            _wait_for(router.lease_valid, "the router took its lease")
            assert router.read_target("k") == Target("new", names["new"], "v2")
            assert router.write_target("k") == Target("new", names["new"], "v2")


def test_router_without_state_document_raises_until_one_exists(
    mongo_uri: str, direct: MongoClient[dict[str, Any]], names: dict[str, str]
) -> None:
    """No state document and no fallback: read/write/cache_key raise; a created state is served."""
    with Router(
        mongo_uri, names["migration"], metadata_db=names["metadata_db"], poll_interval_s=0.2
    ) as router:
        assert router.refresh() is True
        assert router.state is None
        asks: list[Callable[[], object]] = [
            lambda: router.read_target("k"),
            lambda: router.write_target("k"),
            lambda: router.cache_key("order", "k"),
        ]
        for ask in asks:
            with pytest.raises(NoRolloutStateError) as raised:
                ask()
            message = str(raised.value)
            assert repr(names["migration"]) in message
            assert f"{names['metadata_db']}.rollout has no document" in message
            assert "stream-migrator rollout run PLAN" in message
            assert "fallback_namespace" in message

        planned = _create_state(direct, names)
        _wait_for(_has_version(router, planned.version), "the router read the new state")
        assert router.read_target("k") == Target("old", names["old"], "v1")
        assert router.write_target("k") == Target("old", names["old"], "v1")
        assert router.cache_key("order", "k") == "order:v1:k"


def test_router_with_fallback_namespace_serves_it_until_a_state_exists(
    mongo_uri: str, direct: MongoClient[dict[str, Any]], names: dict[str, str]
) -> None:
    """No state document yet: the fallback namespace on old; the real state once it exists."""
    with Router(
        mongo_uri,
        names["migration"],
        metadata_db=names["metadata_db"],
        poll_interval_s=0.2,
        fallback_namespace=names["old"],
    ) as router:
        assert router.refresh() is True
        assert router.state is None
        fallback = Target("old", names["old"], "unknown")
        assert router.read_target("k", tenant="acme") == fallback
        assert router.write_target("k") == fallback
        assert fallback.db == names["old"].split(".")[0]
        assert fallback.collection == "orders"

        cutover = _create_state(direct, names, stage=Stage.CUTOVER, percentage=100.0)
        _wait_for(_has_version(router, cutover.version), "the router read the new state")
        assert router.read_target("k") == Target("new", names["new"], "v2")
        assert router.write_target("k") == Target("new", names["new"], "v2")


def test_router_with_expired_lease_refuses_writes_to_new_until_renewed(
    proxy: TcpProxy, direct: MongoClient[dict[str, Any]], names: dict[str, str]
) -> None:
    """MongoDB cut past lease_s: writes to new are refused (old and reads still answered)."""
    split = _create_state(direct, names, stage=Stage.CANARY, tier=0, percentage=50.0)
    with Router(
        proxy.uri,
        names["migration"],
        metadata_db=names["metadata_db"],
        timeout_ms=300,
        poll_interval_s=0.2,
        lease_s=1.5,
    ) as router:
        _wait_for(_has_version(router, split.version), "the router read the state")
        reads = {k: router.read_target(k) for k in KEYS}
        on_new = [k for k, t in reads.items() if t.side == "new"]
        on_old = [k for k, t in reads.items() if t.side == "old"]
        assert router.write_target(on_new[0]).side == "new"
        lease = direct[names["metadata_db"]]["rollout_routers"].find_one({"_id": router.router_id})
        assert lease is not None
        assert lease["acked_version"] == split.version

        proxy.cut()
        _assert_refused(proxy.port)
        _wait_for(lambda: not router.lease_valid(), "the lease ran out", timeout=30)
        for key in on_new:
            with pytest.raises(RouterLeaseExpiredError) as raised:
                router.write_target(key)
        message = str(raised.value)
        assert names["migration"] in message
        assert "lease (1.5 s) has expired" in message
        assert "retry" in message
        assert raised.value.retry_after > 0
        assert {k: router.write_target(k) for k in on_old} == {k: reads[k] for k in on_old}
        assert {k: router.read_target(k) for k in KEYS} == reads  # reads lose no write

        proxy.restore()
        _wait_for(router.lease_valid, "the lease was renewed after restore")
        assert {k: router.write_target(k) for k in KEYS} == reads


def test_router_never_applies_an_older_state_version(
    mongo_uri: str, direct: MongoClient[dict[str, Any]], names: dict[str, str]
) -> None:
    """A read that returns an older version (a lagging secondary) does not move the router back."""
    split = _create_state(direct, names, stage=Stage.CANARY, tier=0, percentage=50.0)
    with Router(
        mongo_uri, names["migration"], metadata_db=names["metadata_db"], background=False
    ) as router:
        assert router.state == split
        older = RolloutState(names["migration"], names["old"], names["new"], version=1)
        doc = older.to_doc()
        direct[names["metadata_db"]]["rollout"].replace_one({"_id": names["migration"]}, doc)
        assert router.refresh() is True
        assert router.state == split  # what it may have acknowledged stays
