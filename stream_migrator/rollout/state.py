"""The rollout state document: one per migration in ``<metadata_db>.rollout``.

Every change is a compare-and-set on ``version``: a writer that read version N
updates only ``{_id, version: N}``. Two controllers (or an operator and a
controller) racing for the same transition therefore cannot both win; the
loser gets :class:`VersionConflictError` and re-reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, WriteConcernError

from stream_migrator.mongo import on_primary
from stream_migrator.rollout.errors import (
    RolloutError,
    UnconfirmedWriteError,
    VersionConflictError,
)
from stream_migrator.rollout.stages import Stage

Path = Literal["old", "new", "split"]
STATE_COLLECTION = "rollout"


@dataclass(frozen=True)
class RolloutState:
    """The flags applications route by (through :mod:`stream_migrator.router`)."""

    migration: str
    old_ns: str
    new_ns: str
    old_schema: str = "v1"
    new_schema: str = "v2"
    stage: Stage = Stage.PLANNED
    tier: int = -1  # index into the plan's tiers; -1 = no tier exposed
    last_safe_tier: int = -1
    percentage: float = 0.0
    tenants_allow: tuple[str, ...] = ()
    tenants_deny: tuple[str, ...] = ()
    halted: bool = False
    halt_reason: str | None = None
    #: Why the controller is not advancing although nothing breached (a fence without
    #: a measurement, ``on_missing = "hold"``); None when nothing holds it.
    hold_reason: str | None = None
    updated_by: str = ""
    updated_at: dt.datetime | None = None
    stage_entered_at: dt.datetime | None = None
    cutover_at: dt.datetime | None = None
    step_entered_at: dt.datetime | None = None  # last advance (a stage or a tier)
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: The audit entry of the transition that produced this version, written in the
    #: same compare-and-set as the state: a controller killed before it appended the
    #: entry leaves it here, and the next one appends it (see Transitions.swap).
    journal: dict[str, Any] | None = None

    @property
    def read_path(self) -> Path:
        return paths_of(self.stage, self.percentage, self.tenants_allow)

    @property
    def write_path(self) -> Path:
        # Writes follow reads key by key: a key exposed to new writes there, so one
        # document is never written on both sides at once.
        return self.read_path

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["_id"] = self.migration
        doc["stage"] = str(self.stage)
        doc["tenants_allow"] = list(self.tenants_allow)
        doc["tenants_deny"] = list(self.tenants_deny)
        doc["read_path"] = self.read_path
        doc["write_path"] = self.write_path
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RolloutState:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in doc.items() if k in names}
        data["stage"] = Stage(doc["stage"])
        data["tenants_allow"] = tuple(doc.get("tenants_allow") or ())
        data["tenants_deny"] = tuple(doc.get("tenants_deny") or ())
        return cls(**data)


def paths_of(stage: Stage, percentage: float, tenants_allow: tuple[str, ...]) -> Path:
    """Which side(s) requests use at a stage: all old, all new, or split by key/tenant."""
    if stage in {Stage.CUTOVER, Stage.COMPLETE}:
        return "new"
    if stage in {Stage.CANARY, Stage.RAMP, Stage.ROLLING_BACK} and (
        percentage > 0 or tenants_allow
    ):
        return "new" if percentage >= 100 else "split"
    return "old"


class StateStore:
    """Reads and compare-and-sets rollout state documents."""

    def __init__(self, client: MongoClient[dict[str, Any]], metadata_db: str) -> None:
        # Primary, majority: the stage decides where applications read and write.
        self.coll: Collection[dict[str, Any]] = on_primary(client[metadata_db][STATE_COLLECTION])

    def load(self, migration: str) -> RolloutState | None:
        doc = self.coll.find_one({"_id": migration})
        return None if doc is None else RolloutState.from_doc(doc)

    def get(self, migration: str) -> RolloutState:
        state = self.load(migration)
        if state is None:
            raise RolloutError(
                f"migration {migration!r} has no rollout state in {self.coll.full_name}; "
                "any `stream-migrator rollout ACTION PLAN` creates it (e.g. `rollout status PLAN`)"
            )
        return state

    def create(self, state: RolloutState, operator: str) -> bool:
        """Insert the initial document; False when it already exists (left untouched)."""
        now = _now()
        first = dataclasses.replace(
            state,
            version=1,
            updated_by=operator,
            updated_at=now,
            stage_entered_at=now,
            step_entered_at=now,
        )
        try:
            self.coll.insert_one(first.to_doc())
        except DuplicateKeyError:
            return False
        return True

    def swap(self, before: RolloutState, operator: str, **changes: Any) -> RolloutState:
        """Write ``before`` + ``changes`` if nobody changed it since ``before`` was read."""
        now = _now()
        # A journal belongs to the one transition that wrote it, never to the next.
        changes.setdefault("journal", None)
        if "stage" in changes and changes["stage"] != before.stage:
            changes.setdefault("stage_entered_at", now)
        after = dataclasses.replace(
            before, **changes, version=before.version + 1, updated_by=operator, updated_at=now
        )
        doc = after.to_doc()
        doc.pop("_id")
        try:
            outcome = self.coll.update_one(
                {"_id": before.migration, "version": before.version}, {"$set": doc}
            )
        except WriteConcernError as exc:
            return self._unconfirmed(before, after, exc)
        if outcome.matched_count != 1:
            current = self.load(before.migration)
            raise VersionConflictError(
                f"rollout state of {before.migration!r} changed under us (we read version "
                f"{before.version}, it is now {current.version if current else 'gone'}, "
                f"by {current.updated_by if current else '?'}); nothing was written - "
                "re-read with `rollout status` and retry"
            )
        return after

    def _unconfirmed(
        self, before: RolloutState, after: RolloutState, exc: WriteConcernError
    ) -> RolloutState:
        """The primary applied ``after`` but no majority confirmed it in time (wtimeout).

        Read it again (a majority read, see ``on_primary``): if a majority sees our
        write, it is durable and the swap succeeded. If it still sees ``before``, the
        write may yet commit or be rolled back by a failover: say so, retryably,
        rather than let a retry meet our own write and call it a conflict. Anything
        else is another writer's version: a conflict as any other.
        """
        current = self.load(before.migration)
        ours = (after.version, after.updated_by, _utc(after.updated_at))
        if (
            current is not None
            and (current.version, current.updated_by, _utc(current.updated_at)) == ours
        ):
            return current
        if current is not None and current.version == before.version:
            raise UnconfirmedWriteError(
                f"the rollout state write of {before.migration!r} (version {before.version} -> "
                f"{after.version}) reached the primary but was not confirmed by a majority in "
                f"time ({exc}); it may still become durable, or be rolled back by a failover. "
                "Check the replica set's health, then re-read with `rollout status` and "
                "retry if it is still at the old version"
            ) from exc
        raise VersionConflictError(
            f"rollout state of {before.migration!r} changed under us (we read version "
            f"{before.version}, it is now {current.version if current else 'gone'}, by "
            f"{current.updated_by if current else '?'}); our write reached the primary but "
            "no majority confirmed it, and it is not there now - re-read with `rollout "
            "status` and retry"
        ) from exc


def _utc(at: dt.datetime | None) -> dt.datetime | None:
    """``at`` as an aware UTC time (a client without tz_aware reads BSON dates naive)."""
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    # Millisecond precision: what BSON dates keep, so a read-back compares equal.
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
