"""The router SDK: which collection (old or new) a request reads and writes.

Application code::

    from stream_migrator.router import Router

    router = Router(mongo_uri, "orders-v2", fallback_namespace="shop.orders")
    target = router.read_target(order_id, tenant="acme")
    orders = db.client[target.db][target.collection]
    cache.get(router.cache_key("order", order_id))  # never shares old and new shapes

The routing rule and cache ids are in :mod:`stream_migrator.rollout.routing`,
write stamps in :mod:`stream_migrator.rollout.stamps`; this module keeps the
state they are applied to current and the router's lease alive.

State comes from the rollout state document, cached locally. A background thread
follows the metadata collection's change stream and also re-reads the document
every ``poll_interval_s`` (mongo-java-server's getMore returns at once and its
change stream needs an explicit start position, so the poll is the fallback).
When MongoDB is unreachable the router keeps serving the last state it knew.
Until it knows one (no state document yet, or MongoDB unreachable since the
router started) it answers ``Target("old", fallback_namespace, "unknown")`` -
old is the safe side before any rollout - and without a ``fallback_namespace``
it raises :class:`NoRolloutStateError`: it cannot know the old collection's name
on its own, and an empty namespace is no answer an application can use.

Leases (see :mod:`stream_migrator.rollout.leases`): every refresh heartbeats the
router's lease document with the state version it acknowledges (a version is
acknowledged once it has been served for ``ack_delay_s``, so a write whose target
was handed out just before is sent by then). A router whose last heartbeat is more
than ``lease_s`` old refuses to send writes to new (:class:`RouterLeaseExpiredError`)
until MongoDB answers again: the controller may already have rolled back without
it. Reads, and writes of keys on old, are still answered from the last state.
Why refuse and not write to old: an old-path write reaches new only while the
forward pipeline runs and only if it is newer than the key's stamp on new; after
cutover it could sit in old unseen and be overwritten by the reverse stream. A
refused write is never lost: the application sees the error and retries.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from stream_migrator.errors import ConfigError
from stream_migrator.mongo import cluster_time_now
from stream_migrator.observability import get_logger
from stream_migrator.rollout.errors import NoRolloutStateError, RouterLeaseExpiredError
from stream_migrator.rollout.leases import LeaseStore
from stream_migrator.rollout.routing import Target, canonical_id, side_for
from stream_migrator.rollout.stamps import observe_cluster_time, observe_reply
from stream_migrator.rollout.state import STATE_COLLECTION, RolloutState

log = get_logger("router")


class Router:
    """Answers read/write targets from a locally cached rollout state.

    ``fallback_namespace`` (``"db.collection"``, the old collection) is what the
    router answers before it knows a state; without it, asking for a target then
    raises :class:`NoRolloutStateError`.

    ``lease_s``: how long after its last heartbeat (each refresh writes one to
    ``<metadata_db>.rollout_routers``; the router needs write access there) the
    router keeps sending writes to new; at least 3 x ``poll_interval_s``. A MongoDB
    outage longer than that fails writes to new with :class:`RouterLeaseExpiredError`,
    and a rollback waits up to about ``lease_s`` for a router that has gone.
    ``ack_delay_s`` (default ``poll_interval_s``): how long a new state is served
    before the router acknowledges it; a write must be sent within that time of
    ``write_target`` returning.
    """

    def __init__(
        self,
        mongo_uri: str | MongoClient[dict[str, Any]],
        migration: str,
        *,
        metadata_db: str = "stream_migrator",
        poll_interval_s: float = 1.0,
        background: bool = True,
        timeout_ms: int = 2_000,
        fallback_namespace: str | None = None,
        lease_s: float = 15.0,
        ack_delay_s: float | None = None,
    ) -> None:
        if lease_s < 3 * poll_interval_s:
            raise ConfigError(
                f"router for migration {migration!r}: lease_s={lease_s:g} is shorter than "
                f"3 x poll_interval_s ({poll_interval_s:g}); one slow refresh would expire "
                "it. Raise lease_s or lower poll_interval_s"
            )
        if fallback_namespace is not None:
            db, dot, coll = fallback_namespace.partition(".")
            if not (db and dot and coll):
                raise ConfigError(
                    f"router for migration {migration!r}: fallback_namespace "
                    f"{fallback_namespace!r} is not 'db.collection'; pass the old "
                    "collection's namespace, e.g. 'shop.orders'"
                )
        self.migration = migration
        self._fallback_namespace = fallback_namespace
        self._own_client = not isinstance(mongo_uri, MongoClient)
        self._client: MongoClient[dict[str, Any]] = (
            MongoClient(
                mongo_uri,
                tz_aware=True,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                # A network that silently drops packets must not block refresh()
                # forever; the change stream waits up to poll_interval_s per getMore.
                socketTimeoutMS=timeout_ms + int(2_000 * poll_interval_s),
                appname="stream-migrator-router",
            )
            if isinstance(mongo_uri, str)
            else mongo_uri
        )
        self._coll = self._client[metadata_db][STATE_COLLECTION]
        self._leases = LeaseStore(self._client, metadata_db)
        self.router_id = uuid.uuid4().hex
        self.lease_s = lease_s
        self._ack_delay_s = poll_interval_s if ack_delay_s is None else ack_delay_s
        self._beat = 0
        self._lease_until: float | None = None  # monotonic; None = no lease held
        self._acked = 0  # the state version this router acknowledges
        self._applied_at = 0.0  # monotonic time the current state version was applied
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._state: RolloutState | None = None
        self._reached = False  # has a refresh ever succeeded?
        self._last_error: str | None = None
        self._stop = threading.Event()
        self.last_refresh: float | None = None
        self.refresh()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._follow, name="router-refresh", daemon=True)
            self._thread.start()

    # -- answers ----------------------------------------------------------------
    @property
    def state(self) -> RolloutState | None:
        with self._lock:
            return self._state

    def read_target(self, key: Any, tenant: str | None = None) -> Target:
        """The collection to read ``key`` from (before a state is known: see the class)."""
        return self._target(key, tenant)

    def write_target(self, key: Any, tenant: str | None = None) -> Target:
        """The collection to write ``key`` to: the same rule and errors as ``read_target``.

        Raises :class:`RouterLeaseExpiredError` instead of answering new while the
        router's lease has run out (see the module docstring); send the write soon
        after asking (within ``ack_delay_s``): that is how long an acknowledged
        rollback waits for writes already routed.
        """
        # Same rule as reads: a key lives on exactly one side at a time.
        target = self._target(key, tenant)
        if target.side == "new" and not self.lease_valid():
            raise self._expired_error()
        return target

    def lease_valid(self) -> bool:
        """True while the last heartbeat was written less than ``lease_s`` ago."""
        with self._lock:
            until = self._lease_until
        return until is not None and time.monotonic() < until

    def cache_key(self, entity: str, doc_id: Any, tenant: str | None = None) -> str:
        """``entity:schema:id``: old and new shapes of one document never share an entry.

        The id keeps its BSON type (:func:`canonical_id`): ``1`` and ``'1'`` differ.
        """
        return f"{entity}:{self._target(doc_id, tenant).schema}:{canonical_id(doc_id)}"

    def _target(self, key: Any, tenant: str | None) -> Target:
        state = self.state
        if state is None:
            if self._fallback_namespace is not None:
                return Target("old", self._fallback_namespace, "unknown")
            raise self._no_state_error()
        side = side_for(state, key, tenant)
        if side == "new":
            return Target("new", state.new_ns, state.new_schema)
        return Target("old", state.old_ns, state.old_schema)

    def _expired_error(self) -> RouterLeaseExpiredError:
        with self._lock:
            last_error = self._last_error
            held = self._lease_until is not None
        lease = (
            f"its lease ({self.lease_s:g} s) has expired without a heartbeat to"
            if held
            else "it holds no lease (no heartbeat written yet, or released at close) in"
        )
        return RouterLeaseExpiredError(
            f"router {self.router_id} for migration {self.migration!r} refuses a write to "
            f"new: {lease} "
            f"{self._leases.coll.full_name} (last error: {last_error or 'none'}); a "
            "rollback may have moved writers back to old. The write was not sent anywhere: "
            "retry once the router reaches MongoDB again",
            retry_after=self._poll_interval_s,
        )

    def _no_state_error(self) -> NoRolloutStateError:
        with self._lock:
            reached, last_error = self._reached, self._last_error
        if reached:
            why = f"{self._coll.full_name} has no document with _id {self.migration!r}"
        else:
            why = f"MongoDB has not answered since the router started ({last_error})"
        return NoRolloutStateError(
            f"router for migration {self.migration!r} knows no rollout state: {why}. "
            "Create the state with `stream-migrator rollout run PLAN` (any `rollout` "
            "command on the plan creates it), or pass Router(..., "
            "fallback_namespace='<db>.<old collection>') to use the old collection "
            "until a state is known"
        )

    # -- refresh ----------------------------------------------------------------
    def refresh(self) -> bool:
        """Re-read the state document and heartbeat the lease; False when MongoDB fails.

        On failure the last state is kept (and the lease runs out ``lease_s`` after
        the last successful heartbeat).
        """
        # The lease counts from before the read: the heartbeat that renews it is later.
        started = time.monotonic()
        try:
            reply = self._coll.database.command(
                {
                    "find": self._coll.name,
                    "filter": {"_id": self.migration},
                    "limit": 1,
                    "singleBatch": True,
                },
                codec_options=self._coll.codec_options,
                read_preference=self._coll.read_preference,
            )
            observe_reply(reply)
            batch = reply["cursor"]["firstBatch"]
            state = RolloutState.from_doc(batch[0]) if batch else None
        except PyMongoError as exc:
            return self._failed("router.refresh_failed", exc)
        with self._lock:
            current = self._state.version if self._state is not None else None
            if state is not None and current is not None and state.version < current:
                # An older version (a lagging secondary under a secondary read preference):
                # never go back to it - this router may have acknowledged the newer one.
                state = self._state
            version = state.version if state is not None else 0
            if current != version:
                self._applied_at = started
                if current is None:  # nothing served before: nothing in flight
                    self._acked = version
            self._state = state
            self._reached = True
            self._last_error = None
            if started - self._applied_at >= self._ack_delay_s:
                self._acked = version
            acked = self._acked
            self._beat += 1
            beat = self._beat
        try:
            self._leases.renew(
                self.router_id, self.migration, acked_version=acked, beat=beat, lease_s=self.lease_s
            )
        except PyMongoError as exc:
            return self._failed("router.heartbeat_failed", exc)
        with self._lock:
            # max: a slower concurrent refresh (thread + caller) must not shorten it.
            self._lease_until = max(self._lease_until or 0.0, started + self.lease_s)
        self.last_refresh = time.monotonic()
        return True

    def _failed(self, event: str, exc: PyMongoError) -> bool:
        log.warning(event, migration=self.migration, error=str(exc))
        with self._lock:
            self._last_error = str(exc)
        return False

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                start = cluster_time_now(self._client)
                observe_cluster_time(start)
                with self._coll.watch(
                    start_at_operation_time=start,
                    max_await_time_ms=int(self._poll_interval_s * 1000),
                ) as stream:
                    self.refresh()  # anything between the last read and the stream start
                    last_poll = time.monotonic()
                    while not self._stop.is_set():
                        change = stream.try_next()
                        if change is not None:
                            self.refresh()
                            continue
                        if time.monotonic() - last_poll >= self._poll_interval_s:
                            self.refresh()
                            last_poll = time.monotonic()
                        self._stop.wait(0.05)
            except Exception as exc:  # noqa: BLE001 - keep serving the last state, retry
                log.warning("router.stream_failed", migration=self.migration, error=str(exc))
                self._stop.wait(self._poll_interval_s)
                self.refresh()

    def close(self) -> None:
        """Stop following; release the lease (a controller need not wait for it to expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._lease_until = None
        try:
            self._leases.release(self.router_id)
        except PyMongoError as exc:  # the lease then expires on its own
            log.warning("router.release_failed", migration=self.migration, error=str(exc))
        if self._own_client:
            self._client.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
