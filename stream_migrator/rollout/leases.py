"""Router leases: which rollout state each live router has applied, and who has expired.

Every :class:`~stream_migrator.router.Router` heartbeats one document in
``<metadata_db>.rollout_routers`` at each refresh: the state version it
acknowledges, a beat counter and its lease length. A router whose heartbeat has
not been written for ``lease_s`` (measured from before the write was sent, on its
own monotonic clock) stops sending writes to new by itself. The controller
(rollback) waits until every router has acknowledged the old-only state, or has
expired.

Why a collection of its own and not fields in the state document: every router
follows the state document's change stream; heartbeats there would wake every
router on every other router's beat.

Expiry is judged without comparing clocks: the controller notes when it first saw
a router's current beat (its own monotonic clock). That beat was written after
the router took its lease start, so once ``lease_s`` (times a drift margin) has
passed on the controller's clock with no new beat, the router's lease has run
out on its own clock as well. A controller that restarts only waits longer.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection

from stream_migrator.mongo import on_primary

ROUTERS_COLLECTION = "rollout_routers"
#: Clock-rate allowance between a router's and the controller's monotonic clocks.
DRIFT_MARGIN = 1.1
#: Seconds added to every expiry judgement (scheduling, the read itself).
EXPIRY_SLACK_S = 1.0


@dataclass(frozen=True)
class Lease:
    """One router's heartbeat document."""

    router: str
    migration: str
    acked_version: int
    beat: int
    lease_s: float
    at: dt.datetime | None = None  # the router's wall clock, for people; never compared
    host: str = ""

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Lease:
        return cls(
            router=str(doc["_id"]),
            migration=str(doc.get("migration", "")),
            acked_version=int(doc.get("acked_version", 0)),
            beat=int(doc.get("beat", 0)),
            lease_s=float(doc.get("lease_s", 0.0)),
            at=doc.get("at"),
            host=str(doc.get("host", "")),
        )

    def describe(self) -> str:
        return f"{self.router} on {self.host or '?'} (acknowledged version {self.acked_version})"


class LeaseStore:
    """Writes a router's heartbeat, removes it on close, lists a migration's routers."""

    def __init__(self, client: MongoClient[dict[str, Any]], metadata_db: str) -> None:
        # Primary, majority: a heartbeat read from a lagging secondary could look expired
        # while its router still writes to new (a rollback would then not wait for it).
        self.coll: Collection[dict[str, Any]] = on_primary(client[metadata_db][ROUTERS_COLLECTION])

    def renew(
        self, router: str, migration: str, *, acked_version: int, beat: int, lease_s: float
    ) -> None:
        """Upsert the heartbeat (raises PyMongoError when MongoDB does not take it)."""
        self.coll.update_one(
            {"_id": router},
            {
                # $max: of two concurrent heartbeats of one router the older may land last.
                "$max": {"acked_version": acked_version, "beat": beat},
                "$set": {
                    "migration": migration,
                    "lease_s": lease_s,
                    "at": dt.datetime.now(dt.UTC),
                    "host": f"{socket.gethostname()}:{os.getpid()}",
                },
            },
            upsert=True,
        )

    def release(self, router: str) -> None:
        self.coll.delete_one({"_id": router})

    def forget(self, leases: Iterable[Lease]) -> None:
        """Remove expired leases, each only if no beat came since it was judged (a router
        that comes back writes a new one before it routes writes to new again)."""
        for lease in leases:
            self.coll.delete_one({"_id": lease.router, "beat": lease.beat})

    def of(self, migration: str) -> list[Lease]:
        return [Lease.from_doc(d) for d in self.coll.find({"migration": migration})]


@dataclass(frozen=True)
class AckReport:
    """Routers as the controller sees them against one state version."""

    acknowledged: list[Lease]
    expired: list[Lease]
    pending: list[Lease]

    def summary(self) -> dict[str, Any]:
        return {
            "routers_acknowledged": [lease.router for lease in self.acknowledged],
            "routers_expired": [lease.router for lease in self.expired],
            "routers_pending": [lease.describe() for lease in self.pending],
        }


class LeaseWatch:
    """Decides, across calls, which routers acknowledged ``version`` and which expired."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first_seen: dict[str, tuple[int, float]] = {}  # router -> (beat, when seen)

    def classify(self, leases: Iterable[Lease], version: int) -> AckReport:
        now = self._clock()
        acknowledged, expired, pending = [], [], []
        for lease in leases:
            beat, seen = self._first_seen.get(lease.router, (None, now))
            if beat != lease.beat:
                seen = now
                self._first_seen[lease.router] = (lease.beat, now)
            if lease.acked_version >= version:
                acknowledged.append(lease)
            elif now - seen >= self.expiry_after(lease):
                expired.append(lease)
            else:
                pending.append(lease)
        return AckReport(acknowledged, expired, pending)

    @staticmethod
    def expiry_after(lease: Lease) -> float:
        """Seconds without a new beat after which ``lease`` has surely run out."""
        return lease.lease_s * DRIFT_MARGIN + EXPIRY_SLACK_S
