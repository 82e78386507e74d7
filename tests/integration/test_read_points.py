"""Reads that decide a verdict, a rollback or a lease go to the primary with majority concern.

With a URI that asks for ``secondaryPreferred``, a lagging secondary would show an
older state: a rollback verification could pass on a prefix that lacks the last
writes, a live router's heartbeat could look expired, and a compare could agree
with data a failover rolls back. Each read here must carry ``readConcern:
majority`` (the primary is chosen together with it, by ``mongo.on_primary``);
checked on the commands the real wire server receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.collection import Collection

from stream_migrator.kafka import ensure_topic
from stream_migrator.reconcile import full_compare, load_reconcile_settings
from stream_migrator.reconcile.engine import Reconciler
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.rollout.leases import LeaseStore
from stream_migrator.rollout.state import StateStore
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec

pytestmark = pytest.mark.integration

_READS = {"find", "aggregate", "count", "distinct"}


class _Reads(monitoring.CommandListener):
    """Every read command sent, with its database, collection and read concern."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in _READS:
            coll = str(event.command.get(event.command_name))
            self.seen.append((event.database_name, coll, event.command.get("readConcern")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def assert_majority(self, *colls: Collection[Any]) -> None:
        """Each of ``colls`` was read, and every read of it asked for majority concern."""
        for coll in colls:
            concerns = [c for d, n, c in self.seen if (d, n) == (coll.database.name, coll.name)]
            assert concerns, f"no read of {coll.full_name}"
            assert all(c == {"level": "majority"} for c in concerns), concerns


@pytest.fixture
def secondary_preferred(
    settings_kwargs: dict[str, Any],
) -> Iterator[tuple[Settings, MongoClient[dict[str, Any]], _Reads]]:
    """Settings, and a client whose URI prefers secondaries, with its reads recorded."""
    s = load_settings(**settings_kwargs)
    uri = s.mongo_uri.get_secret_value()
    uri += ("&" if "?" in uri else "/?") + "readPreference=secondaryPreferred"
    reads = _Reads()
    client: MongoClient[dict[str, Any]] = MongoClient(uri, event_listeners=[reads])
    try:
        yield s, client, reads
    finally:
        client.close()


def _colls(s: Settings, client: MongoClient[dict[str, Any]]) -> tuple[Any, Any]:
    (sdb, scoll), (tdb, tcoll) = s.split_ns(s.source), s.split_ns(s.target)
    return client[sdb][scoll], client[tdb][tcoll]


def test_full_compare_reads_both_sides_with_majority_concern(
    secondary_preferred: tuple[Settings, MongoClient[dict[str, Any]], _Reads],
) -> None:
    """The compare behind the simple gate, the rollback verification and the demo."""
    s, client, reads = secondary_preferred
    source, target = _colls(s, client)
    source.insert_one({"_id": 1, "cust_name": "a"})
    full_compare(source, target, get_spec(s.spec))
    reads.assert_majority(source, target)


def test_reconciler_reads_both_sides_with_majority_concern(
    secondary_preferred: tuple[Settings, MongoClient[dict[str, Any]], _Reads],
    settings_kwargs: dict[str, Any],
) -> None:
    """The default gate's reconciler: scans and rechecks of both sides."""
    settings, client, reads = secondary_preferred
    s = load_reconcile_settings(None, **settings_kwargs, reconcile_settle_s=0.1)
    ensure_topic(s.kafka_bootstrap, s.changes_topic, s.partitions)
    source, target = _colls(settings, client)
    source.insert_many([{"_id": i, "cust_name": "a"} for i in range(5)])
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    try:
        Reconciler(s, client, probe).run()
    finally:
        probe.close()
    reads.assert_majority(source, target)


def test_rollout_state_and_router_leases_are_read_with_majority_concern(
    secondary_preferred: tuple[Settings, MongoClient[dict[str, Any]], _Reads],
) -> None:
    """A lease read from a lagging secondary could look expired while its router still writes."""
    s, client, reads = secondary_preferred
    states = StateStore(client, s.metadata_db)
    leases = LeaseStore(client, s.metadata_db)
    states.load(s.migration)
    leases.of(s.migration)
    reads.assert_majority(states.coll, leases.coll)
