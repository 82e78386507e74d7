"""The router SDK: which collection (old or new) a request reads and writes.

Application code::

    from stream_migrator.router import Router

    router = Router(mongo_uri, "orders-v2", fallback_namespace="shop.orders")
    target = router.read_target(order_id, tenant="acme")
    orders = db.client[target.db][target.collection]
    cache.get(router.cache_key("order", order_id))  # never shares old and new shapes

Routing is sticky: a key's bucket is a hash of (migration, BSON of the key), so it
does not change between requests or processes, and a key exposed at 5% is still
exposed at 25% (the threshold only grows as the rollout advances). Denied tenants
always get old, allowed tenants get new from their tier on.

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
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from bson.int64 import Int64
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from stream_migrator import events
from stream_migrator.errors import ConfigError
from stream_migrator.mongo import cluster_time_now
from stream_migrator.observability import get_logger
from stream_migrator.rollout.errors import NoRolloutStateError
from stream_migrator.rollout.stages import Stage
from stream_migrator.rollout.state import STATE_COLLECTION, RolloutState
from stream_migrator.spec import META_FIELD

log = get_logger("router")
Side = Literal["old", "new"]
BUCKETS = 10_000


@dataclass(frozen=True)
class Target:
    """The collection one request should use."""

    side: Side
    namespace: str
    schema: str

    @property
    def db(self) -> str:
        return self.namespace.partition(".")[0]

    @property
    def collection(self) -> str:
        return self.namespace.partition(".")[2]


def bucket(migration: str, key: Any) -> int:
    """0..9999, stable for a key across processes (salted by migration)."""
    digest = hashlib.blake2b(
        migration.encode() + b"\0" + events.key_bytes(key), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def side_for(state: RolloutState, key: Any, tenant: str | None = None) -> Side:
    """Old or new for one key under ``state`` (pure; reads and writes use the same rule)."""
    path = state.read_path
    if path != "split":
        return path
    if tenant is not None and tenant in state.tenants_deny:
        return "old"
    if tenant is not None and tenant in state.tenants_allow:
        return "new"
    return (
        "new" if bucket(state.migration, key) < round(state.percentage * BUCKETS / 100) else "old"
    )


def version_now() -> int:
    """A version for an application write: later than any change of this second.

    Stamp every write made on the new path with it (``stamp``, ``stamp_update``): a
    forward event still in flight from before the key moved is then refused as
    stale instead of overwriting the application's newer write, and the reverse
    stream knows the write as the application's (it carries only those back).
    Stamping old-path writes too lets the guard order them after a new-path write
    of the same key that the reverse stream delivers late (after a halt).
    """
    return events.app_version(int(time.time()))


def stamp_update(update: dict[str, Any]) -> dict[str, Any]:
    """An update-operator document with ``_sm.v = version_now()`` added to its ``$set``."""
    return {**update, "$set": {**update.get("$set", {}), f"{META_FIELD}.v": Int64(version_now())}}


def stamp(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``_sm.v = version_now()`` (for writes on the new path)."""
    return {**document, META_FIELD: {"v": Int64(version_now())}}


class Router:
    """Answers read/write targets from a locally cached rollout state.

    ``fallback_namespace`` (``"db.collection"``, the old collection) is what the
    router answers before it knows a state; without it, asking for a target then
    raises :class:`NoRolloutStateError`.
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
    ) -> None:
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
        """The collection to write ``key`` to: the same rule and errors as ``read_target``."""
        # Same rule as reads: a key lives on exactly one side at a time.
        return self._target(key, tenant)

    def cache_key(self, entity: str, doc_id: Any, tenant: str | None = None) -> str:
        """``entity:schema:id``: old and new shapes of one document never share an entry."""
        return f"{entity}:{self._target(doc_id, tenant).schema}:{doc_id}"

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
        """Re-read the state document; False (last state kept) when MongoDB fails."""
        try:
            doc = self._coll.find_one({"_id": self.migration})
        except PyMongoError as exc:
            log.warning("router.refresh_failed", migration=self.migration, error=str(exc))
            with self._lock:
                self._last_error = str(exc)
            return False
        with self._lock:
            self._state = RolloutState.from_doc(doc) if doc is not None else None
            self._reached = True
            self._last_error = None
        self.last_refresh = time.monotonic()
        return True

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                start = cluster_time_now(self._client)
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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._own_client:
            self._client.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "NoRolloutStateError",
    "Router",
    "Stage",
    "Target",
    "bucket",
    "side_for",
    "stamp",
    "stamp_update",
    "version_now",
]
