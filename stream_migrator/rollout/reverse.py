"""The reverse stream: new collection -> inverse transform -> old collection.

During canary, ramp and cutover applications write to the new collection. The
reverse stream keeps the old collection current with those writes, so a
rollback returns readers to old without losing one. It is the same pipeline run
backwards: capture tails the NEW collection under the migration name
``<m>-reverse`` (its own topics, group and checkpoint), and a transform worker
applies ``spec.inverse`` to the OLD collection through the version-guarded sink.
Both run as :mod:`stream_migrator.app` builds them (``run_reverse_capture``,
``run_reverse_transform``: the forward worker's builder); this module holds what
makes them the reverse one: settings, inverse spec, sink, echo test, drain.

Only writes made on the new path travel back. Every document the forward sink
writes carries ``_sm.v`` = the old-side cluster time of its change; an
application write on the new path carries ``router.stamp``'s version (increment
all ones, which no cluster time has) or no ``_sm`` at all. A forward delete
leaves a tombstone in ``<new>.sm_tombstones`` just before it lands. The reverse
sink decides per document, after coalescing a batch, and drops forward echoes.
Why: old documents written by applications on the old path carry no version, so
an echo of an older forward write that arrived after a newer old-path write
would overwrite it; and the reverse writer never touches old documents that only
the forward pipeline wrote. The other way round, each document the reverse
writer puts in old carries ``_sm.echo`` (a hash of its content): the forward
worker skips a change that still matches it, so the reverse writer's copy never
goes back to new over a newer stamped write. ``skip_equal`` stays as a third
line: an upsert of content old already holds is skipped.

Consequence: old documents that a new-path write reached carry the ``_sm``
field (the version guard needs it). Readers of the old collection should ignore
``_sm`` (the forward spec drops it on the way to new).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer
from pymongo import ReadPreference
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from stream_migrator import events
from stream_migrator.capture import MongoCheckpointStore
from stream_migrator.errors import RetryableError
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.kafka import consumer_config, group_lag, group_members
from stream_migrator.mongo import cluster_time_now, connect
from stream_migrator.observability import get_logger
from stream_migrator.reconcile import full_compare
from stream_migrator.settings import Settings
from stream_migrator.spec import MigrationSpec, get_spec
from stream_migrator.spec.model import step_copies_on_write
from stream_migrator.transform import MongoSink
from stream_migrator.transform.sink import GuardMode

log = get_logger("reverse")
REVERSE_SUFFIX = "-reverse"
#: A delete on new within this many seconds of a forward tombstone for its _id is
#: the forward delete itself (the sink buries, then deletes, in one batch).
ECHO_WINDOW_S = 30.0


class ReverseSink(MongoSink):
    """The old collection's sink: writes what applications did on new, drops forward echoes."""

    def __init__(
        self,
        old: Collection[dict[str, Any]],
        guard: GuardMode,
        forward_tombstones: Collection[dict[str, Any]],
        *,
        echo_window_s: float = ECHO_WINDOW_S,
    ) -> None:
        # mark_echoes: the forward stream sees these writes again on old and must know
        # them (is_marked_echo) from later application writes there.
        super().__init__(old, guard, skip_equal=True, mark_echoes=True)
        # From the primary, as the sink's own reads: a lagging secondary would hide a
        # fresh forward tombstone and the forward delete would travel back as an app's.
        self._forward_tombstones = forward_tombstones.with_options(
            read_preference=ReadPreference.PRIMARY
        )
        self._echo_window_s = echo_window_s

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        # Mark the forward deletes; MongoSink.apply coalesces first, so the newest change
        # of a document decides, and drops (and counts) the echoes.
        echo_deletes = self._forward_deletes([w for w in writes if w.document is None])
        return super().apply(
            [
                dataclasses.replace(w, echo=True)
                if w.document is None and events.hashable_id(w.doc_id) in echo_deletes
                else w
                for w in writes
            ]
        )

    def _forward_deletes(self, deletes: list[TargetWrite]) -> set[Any]:
        """The deletes (by _id) that the forward sink made: a fresh tombstone is beside them."""
        if not deletes:
            return set()
        try:
            buried = {
                events.hashable_id(t["_id"]): t["at"]
                for t in self._forward_tombstones.find(
                    {"_id": {"$in": [w.doc_id for w in deletes]}}, {"at": 1}
                )
            }
        except PyMongoError as exc:
            raise RetryableError(f"reading the forward tombstones failed: {exc}") from exc
        echoes = set()
        for w in deletes:
            at = buried.get(events.hashable_id(w.doc_id))
            if at is not None and abs((w.version >> 32) - at.timestamp()) <= self._echo_window_s:
                echoes.add(events.hashable_id(w.doc_id))
        return echoes


def reverse_settings(settings: Settings) -> Settings:
    """The forward settings turned around: capture new, write old, own topics and group."""
    name = settings.migration
    if len(name) + len(REVERSE_SUFFIX) > 63:
        name = name[: 63 - len(REVERSE_SUFFIX)]
    return settings.model_copy(
        update={
            "migration": name + REVERSE_SUFFIX,
            "source": settings.target,
            "target": settings.source,
        }
    )


@dataclass(frozen=True)
class _Undone:
    """A step run backwards: apply = invert."""

    step: Any

    def apply(self, doc: dict[str, Any]) -> None:
        self.step.invert(doc)

    def invert(self, doc: dict[str, Any]) -> None:
        self.step.apply(doc)

    @property
    def copy_on_write(self) -> bool:
        """As the step it undoes: a built-in step writes only through copy-on-write paths."""
        return step_copies_on_write(self.step)


def inverted(spec: MigrationSpec) -> MigrationSpec:
    """The spec from the new shape to the old: its ``transform`` is ``spec.inverse``."""
    return MigrationSpec(
        name=f"{spec.name}.inverse",
        source_version=spec.target_version,
        target_version=spec.source_version,
        steps=tuple(_Undone(step) for step in reversed(spec.steps)),
    )


def start_position(settings: Settings) -> bool:
    """Point the reverse capture at "now" without a snapshot (if it has no checkpoint yet).

    Why no snapshot: before the first write on the new path, old already holds
    everything new holds; only later changes need to travel back. Call this when
    entering canary, before any application write lands on new. True if it set one.
    """
    rev = reverse_settings(settings)
    client = connect(rev.mongo_uri.get_secret_value(), app="reverse-position")
    try:
        store = MongoCheckpointStore(client, rev.metadata_db, rev.migration)
        if store.load() is not None:
            return False
        # after_past: a position later than every earlier change. On the stand-in a
        # "start of this second" bound would replay this second's forward writes to
        # new, and echoed to old they would overwrite newer application writes.
        at = cluster_time_now(client, after_past=True)
        store.replace(
            resume_token=None,
            start_at=events.version_of(at),
            source=rev.source,
            snapshot={"done": True, "last_id": None, "skipped": "reverse stream"},
        )
        log.info("reverse.position_set", start_at=str(at))
        return True
    finally:
        client.close()


def reverse_stream_problem(settings: Settings) -> str | None:
    """Why the reverse stream cannot carry new-path writes back yet, or None when it can.

    Ready means: the reverse capture has a start position (``rollout reverse``
    set it before any write on new) and the reverse worker's consumer group has a
    member. Both run in the ``rollout reverse`` process, so a member means it is up.
    """
    rev = reverse_settings(settings)
    client = connect(rev.mongo_uri.get_secret_value(), app="reverse-probe")
    try:
        if MongoCheckpointStore(client, rev.metadata_db, rev.migration).load() is None:
            return f"the reverse capture {rev.migration!r} has no start position"
    finally:
        client.close()
    members = group_members(rev.kafka_bootstrap, rev.consumer_group, security=rev.kafka_client)
    if members is None:
        return f"Kafka did not describe consumer group {rev.consumer_group!r}"
    if members == 0:
        return f"consumer group {rev.consumer_group!r} has no member (no reverse worker running)"
    return None


def drain_and_verify(settings: Settings, *, timeout_s: float = 60.0) -> tuple[bool, dict[str, Any]]:
    """Wait until both streams are drained and old == inverse(new) (a reverse full compare).

    A document on new that the inverse spec cannot undo never reached old (the
    reverse worker quarantined it), so it blocks the rollback as surely as a
    mismatch: ``untransformable`` counts them and ``untransformable_ids`` names
    them (``_id`` and the inverse's reason) until they are fixed on new, or the
    inverse spec is, and the reverse quarantine replayed.

    Returns (ok, details); details carry the counts for the audit trail.
    """
    rev = reverse_settings(settings)
    spec = inverted(get_spec(settings.spec, settings.hook_policy))
    client = connect(settings.mongo_uri.get_secret_value(), app="reverse-verify")
    consumer = Consumer(
        consumer_config(rev.kafka_bootstrap, rev.consumer_group, "sm-drain", rev.kafka_client)
    )
    fwd = Consumer(
        consumer_config(
            settings.kafka_bootstrap, settings.consumer_group, "sm-drain", settings.kafka_client
        )
    )
    details: dict[str, Any] = {}
    try:
        new_db, new_coll = settings.split_ns(settings.target)
        old_db, old_coll = settings.split_ns(settings.source)
        deadline = time.monotonic() + timeout_s
        while True:
            reverse_lag = group_lag(consumer, rev.changes_topic)
            forward_lag = group_lag(fwd, settings.changes_topic)
            details = {"reverse_lag": reverse_lag, "forward_lag": forward_lag}
            if reverse_lag == 0 and forward_lag == 0:
                report = full_compare(client[new_db][new_coll], client[old_db][old_coll], spec)
                details.update(
                    compared=report.source_count,
                    mismatches=report.mismatches,
                    missing_in_old=report.missing,
                    extra_in_old=report.extra,
                    different=report.different,
                    untransformable=report.untransformable,
                    untransformable_ids=[
                        {"_id": doc_id, "reason": reason} for doc_id, reason in report.rejected
                    ],
                    examples=report.examples[:5],
                )
                if report.blocked == 0:
                    return True, details
            if time.monotonic() >= deadline:
                return False, details
            time.sleep(0.5)
    finally:
        consumer.close()
        fwd.close()
        client.close()
