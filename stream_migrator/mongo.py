"""MongoDB helpers: client construction and the cluster clock."""

from __future__ import annotations

import time
from typing import Any

from bson import Timestamp
from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, PyMongoError

from stream_migrator.errors import FatalError, RetryableError


def connect(uri: str, *, app: str, timeout_ms: int = 10_000) -> MongoClient[dict[str, Any]]:
    """A client with the codec options every stage uses (tz-aware datetimes)."""
    return MongoClient(
        uri,
        appname=f"stream-migrator-{app}",
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


def cluster_time_now(client: MongoClient[dict[str, Any]], *, after_past: bool = False) -> Timestamp:
    """A cluster time no later than any operation that starts after this call returns.

    Real replica sets gossip ``$clusterTime`` in every reply. mongo-java-server
    sends none; its oplog clock is ``Timestamp(wall-clock seconds, increment)``
    on this same host, so ``Timestamp(now_seconds, 0)`` is a safe lower bound.
    With ``after_past`` (for stream start positions) that fallback instead waits
    for the next whole second and returns it, so the position is also later than
    every operation made before the call: a stream opened there does not replay
    this second's earlier changes (e.g. the drop that a --resnapshot answers).
    """
    try:
        reply = client.admin.command("ping")
    except ConnectionFailure as exc:
        raise RetryableError(f"MongoDB is unreachable: {exc}", retry_after=1.0) from exc
    except PyMongoError as exc:
        raise FatalError(f"cannot read the cluster time from MongoDB: {exc}") from exc
    cluster = reply.get("$clusterTime", {}).get("clusterTime")
    if isinstance(cluster, Timestamp):
        return cluster
    now = time.time()
    if not after_past:
        return Timestamp(int(now), 0)
    following = int(now) + 1
    time.sleep(following - now)
    return Timestamp(following, 0)
