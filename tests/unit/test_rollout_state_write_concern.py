"""A rollout state write the primary applied but no majority confirmed in time.

MongoDB answers such a write with a write-concern error (``wtimeout``): the primary
holds it, and it may still become durable or be rolled back by a failover. The
stand-in ignores write concern, so this is a logic test over a scripted collection.
Before the fix the error escaped as a raw PyMongo failure, and a retry met our own
unconfirmed write and reported "changed under us" (a version conflict) instead.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import WriteConcernError

from stream_migrator.errors import RetryableError
from stream_migrator.rollout.errors import RolloutError, VersionConflictError
from stream_migrator.rollout.state import RolloutState, StateStore

_WTIMEOUT = WriteConcernError("waiting for replication timed out", 64, {"code": 64})


class _ScriptedStateCollection:
    """``update_one`` reaches the primary but fails its write concern; ``find_one``
    answers what a majority read sees then: the old document, or the write applied."""

    full_name = "sm_meta.sm_rollout_state"

    def __init__(self, before: RolloutState, *, majority_sees_write: bool) -> None:
        self.doc = before.to_doc()
        self.majority_sees_write = majority_sees_write

    def update_one(self, _filter: dict[str, Any], update: dict[str, Any]) -> Any:
        if self.majority_sees_write:
            self.doc = {**self.doc, **update["$set"]}
        raise _WTIMEOUT

    def find_one(self, _filter: dict[str, Any]) -> dict[str, Any]:
        return self.doc


def _store(before: RolloutState, *, majority_sees_write: bool) -> StateStore:
    store = StateStore.__new__(StateStore)
    coll = _ScriptedStateCollection(before, majority_sees_write=majority_sees_write)
    store.coll = coll  # type: ignore[assignment]
    return store


_BEFORE = RolloutState("orders", "shop.orders", "shop.orders_v2", version=3, updated_by="ada")


def test_an_unconfirmed_write_says_so_and_is_retryable() -> None:
    """A majority still sees the old version: the error names the unconfirmed write."""
    with pytest.raises(RolloutError) as caught:
        _store(_BEFORE, majority_sees_write=False).swap(_BEFORE, "grace", halted=True)
    assert not isinstance(caught.value, VersionConflictError)
    assert isinstance(caught.value, RetryableError)
    text = str(caught.value)
    assert "version 3 -> 4" in text
    assert "not confirmed by a majority" in text
    assert "rolled back" in text
    assert "rollout status" in text


def test_a_write_a_majority_already_sees_is_the_result() -> None:
    """By the time we read again the write is majority-committed: the swap succeeded."""
    after = _store(_BEFORE, majority_sees_write=True).swap(_BEFORE, "grace", halted=True)
    assert after.version == 4
    assert after.halted
    assert after.updated_by == "grace"


def test_another_writer_seen_after_the_timeout_is_a_conflict() -> None:
    """What a majority sees is someone else's version 4: ours lost, as any conflict."""
    theirs = RolloutState(
        "orders", "shop.orders", "shop.orders_v2", version=4, updated_by="linus", halted=False
    )
    store = _store(theirs, majority_sees_write=False)
    with pytest.raises(VersionConflictError):
        store.swap(_BEFORE, "grace", halted=True)
