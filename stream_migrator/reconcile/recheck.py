"""Rechecks: suspects re-read on both sides once the pipeline has caught up, until settled.

A suspect is re-read with an indexed ``{_id: {$in: [...]}}`` read of both sides
once the transform group's lag has reached 0 (plus a settle delay for capture).
One that now matches was in flight; one whose source changed after the recheck
round began is still in flight and waits (up to the recheck timeout); anything
else is final, classified with its field-level diff (``stale`` when the source
holds a change newer than the target's version).
"""

from __future__ import annotations

import time
from typing import Any

from stream_migrator import events
from stream_migrator.mongo import cluster_time_now
from stream_migrator.observability import get_logger
from stream_migrator.reconcile.compare import Difference
from stream_migrator.reconcile.lag import latest_change_versions
from stream_migrator.reconcile.sides import Sides, by_id
from stream_migrator.spec import META_FIELD

log = get_logger("reconcile")


def recheck(sides: Sides, run_id: str) -> tuple[int, int]:
    """Recheck pending suspects until each resolves or is final.

    Returns (resolved as in flight, still in flight at the timeout).
    """
    s = sides.settings
    deadline = time.monotonic() + s.reconcile_recheck_timeout_s
    resolved = unresolved = 0
    while not sides.stop.is_set():
        if sides.store.pending_count(run_id) == 0:
            break
        round_start = events.version_of(cluster_time_now(sides.client))
        caught_up = _wait_lag_zero(sides, deadline)
        if caught_up:
            sides.stop.wait(s.reconcile_settle_s)
        timed_out = time.monotonic() >= deadline
        pending = list(sides.store.pending_ids(run_id, sides.bucket_size))
        still = 0
        for ids in pending:
            r, p, u = _recheck_batch(sides, run_id, ids, round_start, caught_up, timed_out)
            resolved += r
            still += p
            unresolved += u
        if still == 0 or timed_out:
            break
        log.info("reconcile.recheck_round", pending=still, caught_up=caught_up)
    return resolved, unresolved


def converge(sides: Sides, ids: list[Any], timeout: float) -> list[Any]:
    """Recheck ``ids`` after the pipeline catches up until all match; returns the rest."""
    deadline = time.monotonic() + timeout
    remaining = ids
    while remaining and not sides.stop.is_set():
        if _wait_lag_zero(sides, deadline):
            sides.stop.wait(sides.settings.reconcile_settle_s)
        still: list[Any] = []
        for start in range(0, len(remaining), sides.bucket_size):
            chunk = remaining[start : start + sides.bucket_size]
            targets = by_id(sides.target, chunk)
            sources = by_id(sides.source, chunk)
            # An untransformable source stays in ``still``: it never converges by waiting.
            still.extend(
                i
                for i in chunk
                if sides.classify(
                    sources.get(events.hashable_id(i)), targets.get(events.hashable_id(i))
                )
                is not None
            )
        remaining = still
        if time.monotonic() >= deadline:
            break
    return remaining


def _wait_lag_zero(sides: Sides, deadline: float) -> bool:
    while time.monotonic() < deadline and not sides.stop.is_set():
        lag = sides.lag.measure(None, None, peek=False)
        # No change topic at all means no pipeline, so nothing can be in flight.
        if (lag.known and lag.events == 0) or lag.topic_missing:
            return True
        sides.stop.wait(0.2)
    return False


def _recheck_batch(
    sides: Sides, run_id: str, ids: list[Any], round_start: int, caught_up: bool, timed_out: bool
) -> tuple[int, int, int]:
    """Re-read ``ids`` on both sides; returns (resolved, still pending, final in flight)."""
    targets = by_id(sides.target, ids)
    sources = by_id(sides.source, ids)
    outcomes: dict[Any, Difference | None] = {}
    for doc_id in ids:
        outcomes[events.hashable_id(doc_id)] = sides.classify(
            sources.get(events.hashable_id(doc_id)), targets.get(events.hashable_id(doc_id))
        )
    differing = [i for i in ids if outcomes[events.hashable_id(i)] is not None]
    versions = latest_change_versions(sides.client, sides.settings.source, differing) or {}
    resolved = pending = unresolved = 0
    final: list[tuple[Any, dict[str, Any]]] = []
    done: list[Any] = []
    for doc_id in ids:
        key = events.hashable_id(doc_id)
        outcome = outcomes[key]
        if outcome is None:
            resolved += 1
            done.append(doc_id)
            continue
        kind = outcome.kind
        diffs = [{**d.to_json(), "describe": d.describe()} for d in outcome.diffs]
        t_doc = targets.get(key)
        t_v = (t_doc or {}).get(META_FIELD, {}).get("v") if t_doc else None
        s_v = versions.get(key)
        in_flight = not caught_up or (s_v is not None and s_v >= round_start)
        if in_flight and not timed_out:
            pending += 1
            continue
        if in_flight:
            unresolved += 1
        if kind in {"type", "value"} and _newer(s_v, t_v):
            kind = "stale"
        final.append(
            (
                doc_id,
                {
                    "state": "final",
                    "kind": kind,
                    "t_v": t_v,
                    "s_v": s_v,
                    "diffs": diffs,
                    "reason": outcome.reason,
                    "in_flight": in_flight,
                },
            )
        )
    sides.store.settle(run_id, done, final)
    return resolved, pending, unresolved


def _newer(source_version: int | None, target_version: int | None) -> bool:
    """The source's latest change is newer than the version the target holds.

    A version with increment 0 is a time rounded down to the second (a snapshot
    read time on a server without ``$clusterTime``, see ``mongo.cluster_time_now``):
    it is a lower bound, so a change within that same second is not provably newer.
    """
    if source_version is None:
        return False
    if target_version is None:
        return True
    if target_version & 0xFFFFFFFF == 0 and source_version >> 32 == target_version >> 32:
        return False
    return source_version > target_version
