"""Application write versions (``_sm.v``): ``stamp``, ``stamp_update``, ``version_now``.

Stamps are never behind a cluster time this process has seen in a router's
replies, and strictly increase within the process. Across processes they order by
wall clock (nanoseconds); what is left is clock skew between application hosts
for writes of one key within it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bson.int64 import Int64
from bson.timestamp import Timestamp

from stream_migrator import events
from stream_migrator.events import META_FIELD


class _StampClock:
    """Application versions: strictly increasing, never behind a cluster time seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._floor = 0  # the newest cluster time seen in a reply, as a version

    def observe(self, ts: Timestamp) -> None:
        with self._lock:
            self._floor = max(self._floor, events.version_of(ts))

    def next(self) -> int:
        ns = time.time_ns()
        candidate = events.app_version(ns // 1_000_000_000, ns % 1_000_000_000)
        with self._lock:
            version = max(candidate, _app_after(self._last), _app_after(self._floor))
            self._last = version
        return version


def _app_after(version: int) -> int:
    """The smallest application version later than ``version``."""
    seconds, increment = version >> 32, version & 0xFFFFFFFF
    if not events.is_app_version(version):
        return events.app_version(seconds, 0)
    if increment < 0xFFFFFFFF:
        return version + 1
    return events.app_version(seconds + 1, 0)


_CLOCK = _StampClock()


def observe_cluster_time(ts: Timestamp) -> None:
    """Lift later stamps above ``ts`` (routers call it with their replies' cluster times)."""
    _CLOCK.observe(ts)


def observe_reply(reply: dict[str, Any]) -> None:
    """Lift later stamps above the cluster and operation times of a command reply."""
    for ts in (reply.get("$clusterTime", {}).get("clusterTime"), reply.get("operationTime")):
        if isinstance(ts, Timestamp):
            _CLOCK.observe(ts)


def version_now() -> int:
    """A version for an application write: later than any change of this second.

    Stamp every write made on the new path with it (``stamp``, ``stamp_update``): a
    forward event still in flight from before the key moved is then refused as
    stale instead of overwriting the application's newer write, and the reverse
    stream knows the write as the application's (it carries only those back).
    Stamping old-path writes too lets the guard order them after a new-path write
    of the same key that the reverse stream delivers late (after a halt).
    """
    return _CLOCK.next()


def stamp_update(update: dict[str, Any]) -> dict[str, Any]:
    """An update-operator document with ``_sm.v = version_now()`` added to its ``$set``."""
    return {**update, "$set": {**update.get("$set", {}), f"{META_FIELD}.v": Int64(version_now())}}


def stamp(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``_sm.v = version_now()`` (for writes on the new path)."""
    return {**document, META_FIELD: {"v": Int64(version_now())}}
