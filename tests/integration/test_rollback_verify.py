"""Rollback verification on real servers: what the inverse rejects blocks the rollback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from stream_migrator.rollout.reverse import drain_and_verify
from stream_migrator.router import stamp
from stream_migrator.settings import Settings, load_settings
from stream_migrator.spec import get_spec
from tests.integration.helpers import client_for, pipeline, wait_until_match
from tests.integration.rollout_plans import order, start_reverse_stream, stop_all

pytestmark = pytest.mark.integration


@pytest.fixture
def reversing(settings_kwargs: dict[str, Any]) -> Iterator[tuple[Settings, Any, Any]]:
    """20 orders migrated forward, the reverse stream running; yields (settings, old, new)."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    old = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    new = client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]]
    old.insert_many([order(i) for i in range(20)])
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        reverse = start_reverse_stream(s)
        try:
            yield s, old, new
        finally:
            stop_all(reverse)
    client.close()


def _verified(s: Settings, timeout: float = 90) -> tuple[bool, dict[str, Any]]:
    """drain_and_verify until it has compared once (both streams drained) or passed."""
    deadline = time.monotonic() + timeout
    while True:
        ok, details = drain_and_verify(s, timeout_s=5)
        if ok or "untransformable" in details or time.monotonic() > deadline:
            return ok, details


@pytest.mark.usefixtures("write_guard")  # both guard modes
def test_rollback_verify_blocks_on_new_write_the_inverse_rejects(
    reversing: tuple[Settings, Any, Any],
) -> None:
    """A new-path write the inverse cannot undo keeps the rollback blocked, named, until fixed."""
    s, old, new = reversing
    spec = get_spec(s.spec)
    doc = spec.transform(order(100))
    doc["address"] = {"street": "1 Main St"}  # no city/zip: the inverse cannot join it back
    new.insert_one(stamp(doc))

    ok, details = _verified(s)

    assert not ok, details
    assert details["mismatches"] == 0  # not a mismatch: it never reached old ...
    assert details["untransformable"] == 1  # ... and it still blocks, by name
    [named] = details["untransformable_ids"]
    assert named["_id"] == doc["_id"]
    assert "address" in named["reason"]
    assert old.find_one({"_id": doc["_id"]}) is None

    # Fixed on new (a full address), the reverse stream carries it back: verified.
    doc["address"] = {"street": "1 Main St", "city": "Town", "zip": "10001"}
    new.replace_one({"_id": doc["_id"]}, stamp(doc))
    ok, details = drain_and_verify(s, timeout_s=90)
    assert ok, details
    assert details["untransformable"] == 0
    assert (old.find_one({"_id": doc["_id"]}) or {}).get("address") == "1 Main St, Town, 10001"
