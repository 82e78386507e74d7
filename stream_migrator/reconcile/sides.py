"""What every stage of one reconcile run works on: both collections, the run store, the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection

from stream_migrator import events
from stream_migrator.reconcile.compare import Difference, Expectation, classify, expect
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.reconcile.runs import RunStore
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import MigrationSpec

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Sides:
    """The source and target of one migration, and what a compare of them reads and writes."""

    settings: ReconcileSettings
    client: MongoClient[dict[str, Any]]
    source: Collection[dict[str, Any]]
    target: Collection[dict[str, Any]]
    store: RunStore
    spec: MigrationSpec
    lag: LagProbe
    stop: StopFlag
    progress: ProgressFn | None

    @property
    def bucket_size(self) -> int:
        return self.settings.reconcile_bucket_size

    def tick(self, done: int, total: int) -> None:
        """Report progress, if anyone listens."""
        if self.progress is not None:
            self.progress(done, total)

    def expect(self, doc: dict[str, Any]) -> Expectation:
        """What the target should hold (``migrate``: transform + target schema, as the worker)."""
        return expect(self.spec, doc)

    def classify(
        self, s_doc: dict[str, Any] | None, t_doc: dict[str, Any] | None
    ) -> Difference | None:
        """None when the two sides agree, else why not (an untransformable source never agrees)."""
        return classify(None if s_doc is None else self.expect(s_doc), t_doc)


def by_id(
    coll: Collection[dict[str, Any]], ids: list[Any], projection: dict[str, Any] | None = None
) -> dict[Any, dict[str, Any]]:
    """The documents of ``coll`` with these ``_id``s (one indexed read), by ``hashable_id``."""
    return {events.hashable_id(d["_id"]): d for d in coll.find({"_id": {"$in": ids}}, projection)}
