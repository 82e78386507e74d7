"""MongoDB helpers: client construction and the cluster clock."""

from __future__ import annotations

import functools
import time
from typing import Any

from bson import Timestamp
from pymongo import MongoClient, ReadPreference, uri_parser
from pymongo.collection import Collection
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from stream_migrator.errors import ConfigError, FatalError, RetryableError


def connect(
    uri: str, *, app: str, timeout_ms: int = 10_000, check: bool = True
) -> MongoClient[dict[str, Any]]:
    """A client with the codec options every stage uses (tz-aware datetimes).

    With ``check`` (once per URI and process), a misconfiguration - an untrusted
    TLS certificate, TLS against a plaintext server, a refused login - raises a
    ConfigError naming the URI option to fix before anything is read or written. A
    server that is merely unreachable is not an error here: the caller's own retry
    (capture, transform, ...) waits for it.
    """
    if check:
        check_mongo_access(uri)
    return MongoClient(
        uri,
        appname=f"stream-migrator-{app}",
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


@functools.cache
def check_mongo_access(uri: str, timeout_ms: int = 2_000) -> None:
    """Raise ConfigError when MongoDB refuses ``uri``'s TLS or login; else return (see connect)."""
    try:
        # Selection outlasts the connect timeout, so a handshake that hangs reports its own
        # error (naming TLS) rather than a bare selection timeout.
        probe: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=2 * timeout_ms, connectTimeoutMS=timeout_ms
        )
    except ConfigurationError as exc:
        raise ConfigError(f"the MongoDB connection string cannot be used: {exc}") from None
    try:
        probe.admin.command("ping")
    except OperationFailure as exc:
        # ping needs no privilege: a failure is the connection's authentication.
        if exc.code == _AUTHENTICATION_FAILED:
            raise ConfigError(
                f"MongoDB at {_hosts(uri)} refused the login of {_user(uri)!r}: check the user, "
                "password and authSource of the connection string (SM_MONGO_URI or "
                "SM_MONGO_URI_FILE)"
            ) from None
        raise ConfigError(
            f"MongoDB at {_hosts(uri)} could not authenticate {_user(uri)!r} (code {exc.code}: "
            f"{_errmsg(exc)}): check authMechanism and the credentials of the connection string"
        ) from None
    except ConfigurationError as exc:
        raise ConfigError(f"the MongoDB connection string cannot be used: {exc}") from None
    except PyMongoError as exc:
        problem = _tls_problem(uri, str(exc))
        if problem is not None:
            raise problem from None
    finally:
        probe.close()


def _errmsg(exc: OperationFailure) -> str:
    details = exc.details or {}
    return str(details.get("errmsg") or exc)[:200]


_AUTHENTICATION_FAILED = 18


def _tls_problem(uri: str, error: str) -> ConfigError | None:
    options = {
        k.lower(): v for k, v in uri_parser.parse_uri(uri, validate=False)["options"].items()
    }
    ca = options.get("tlscafile", "the system CA store")
    if "certificate verify failed" in error:
        return ConfigError(
            f"the TLS certificate of MongoDB at {_hosts(uri)} is not signed by a CA in "
            f"tlsCAFile={ca}: give the PEM file of the CA that signed it in the connection "
            "string (tlsCAFile=...)"
        )
    if "SSL handshake failed" in error or "WRONG_VERSION_NUMBER" in error:
        # A plaintext server answers a TLS hello with garbage, a closed connection or
        # (mongo-java-server) silence: each shows as a failed handshake, never as an outage.
        return ConfigError(
            f"TLS to MongoDB at {_hosts(uri)} failed ({_handshake_reason(error)}): does the "
            "server accept TLS on that port? Remove tls=true from the connection string, or "
            "use the server's TLS port"
        )
    return None


def _handshake_reason(error: str) -> str:
    reason = error.split("SSL handshake failed:", 1)[-1].split(" (configured timeouts", 1)[0]
    return reason.split(": ", 1)[-1].strip()[:200]


def _hosts(uri: str) -> str:
    nodes = uri_parser.parse_uri(uri, validate=False)["nodelist"]
    return ",".join(f"{host}:{port}" for host, port in nodes)


def _user(uri: str) -> str:
    return str(uri_parser.parse_uri(uri, validate=False).get("username") or "")


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


def on_primary(coll: Collection[dict[str, Any]]) -> Collection[dict[str, Any]]:
    """``coll`` read from the primary with majority read concern, written with majority writes.

    For reads whose result must bound later changes (the snapshot) and for state that
    must survive a failover (checkpoints), whatever read preference the URI carries:
    a secondary may not have a change yet that the stream position already covers,
    and a write acknowledged by the primary alone can be rolled back.
    """
    return coll.with_options(
        read_preference=ReadPreference.PRIMARY,
        read_concern=ReadConcern("majority"),
        write_concern=majority_writes(coll),
    )


#: How long a majority write waits for its acknowledgement when the URI sets no
#: ``wTimeoutMS``: then it fails with a write-concern error, which is retried under
#: backpressure (every such write is idempotent) instead of blocking the process.
MAJORITY_WTIMEOUT_MS = 30_000


def majority_writes(coll: Collection[dict[str, Any]]) -> WriteConcern:
    """``w: majority``, with the URI's ``wTimeoutMS`` (else 30 s) and journaling.

    For every write whose acknowledgement lets something move on (a Kafka offset
    committed, a checkpoint advanced): one the primary alone acknowledged (``w=1``)
    can be rolled back on failover without any error. Without a timeout, a majority
    that cannot answer (a secondary down in a primary-secondary-arbiter set) would
    block the writer for good, and with it a stop.
    """
    asked = coll.write_concern.document
    wtimeout = asked.get("wtimeout", MAJORITY_WTIMEOUT_MS)
    return WriteConcern("majority", wtimeout=wtimeout, j=asked.get("j"))


def majority_read_time(coll: Collection[dict[str, Any]], *, after_past: bool = False) -> Timestamp:
    """A time T such that a majority read of ``coll`` begun after this call sees every write <= T.

    MongoDB answers a read with ``readConcern: majority`` with ``operationTime`` =
    the majority commit point the read saw; that point only moves forward (a new
    primary holds every majority-committed write), so any later majority read on
    the primary contains every write at or before it. A ping's ``$clusterTime`` is
    no such bound: the primary's clock runs ahead of the majority commit point.

    ``after_past`` (for stream start positions) returns the next tick after T, so a
    stream opened there does not replay a change already contained at T (such as
    the drop a --resnapshot answers) and misses nothing a later snapshot lacks.
    mongo-java-server returns no ``operationTime``; it is a single node, where every
    write is at once "majority", so :func:`cluster_time_now` is its fallback.
    """
    command = {
        "find": coll.name,
        "projection": {"_id": 1},
        "limit": 1,
        "singleBatch": True,
        "readConcern": {"level": "majority"},
    }
    try:
        reply = coll.database.command(command, read_preference=ReadPreference.PRIMARY)
    except ConnectionFailure as exc:
        raise RetryableError(f"MongoDB is unreachable: {exc}", retry_after=1.0) from exc
    # Other failures (no primary during an election, ...) reach the caller as they are:
    # capture backs off and retries them with their server code logged.
    point = reply.get("operationTime")
    if not isinstance(point, Timestamp):
        return cluster_time_now(coll.database.client, after_past=after_past)
    return next_tick(point) if after_past else point


def next_tick(ts: Timestamp) -> Timestamp:
    """The cluster time right after ``ts`` (the increment is 32 bits; then the next second)."""
    if ts.inc == 0xFFFFFFFF:
        return Timestamp(ts.time + 1, 0)
    return Timestamp(ts.time, ts.inc + 1)
