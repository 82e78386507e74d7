"""Parallel snapshot planning: split points from splitVector or a sample, ranges in checkpoints."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64, MinKey, ObjectId
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator.capture.snapshot import (
    IdRange,
    evenly,
    ranges_between,
    ranges_from_checkpoint,
    sample_split_points,
    split_vector_points,
)
from stream_migrator.id_order import id_cmp, range_id_filters

#: The reply shape MongoDB documents for splitVector (its help text and split_vector.cpp):
#: the keys of the key pattern, in index order, without the first key of the range.
_SPLIT_VECTOR_REPLY: dict[str, Any] = {
    "timeMillis": 3,
    "splitKeys": [
        {"_id": 2500},
        {"_id": 5000},
        {"_id": 7500},
        {"_id": "k"},
        {"_id": ObjectId("65a000000000000000000001")},
        {"_id": ObjectId("65a000000000000000000002")},
        {"_id": ObjectId("65a000000000000000000003")},
    ],
    "ok": 1.0,
}


def test_split_vector_reply_gives_evenly_spaced_points() -> None:
    """Seven keys cut eight parts: four ranges take every second key, in BSON order."""
    points = split_vector_points(_SPLIT_VECTOR_REPLY, 4)
    assert points == [5000, "k", ObjectId("65a000000000000000000002")]
    assert split_vector_points({"splitKeys": [], "ok": 1.0}, 4) == []
    assert split_vector_points(_SPLIT_VECTOR_REPLY, 1) == []


def test_split_vector_keys_without_range_operators_are_skipped() -> None:
    """A null or MinKey key cannot bound a range: the others are used."""
    reply = {"splitKeys": [{"_id": None}, {"_id": MinKey()}, {"_id": 10}], "ok": 1.0}
    assert split_vector_points(reply, 2) == [10]


def test_sample_split_points_are_quantiles_in_bson_order() -> None:
    """Mixed-type samples are sorted as MongoDB sorts them, deduplicated, then cut."""
    oids = [ObjectId() for _ in range(10)]
    sample: list[Any] = [*reversed(oids), *(f"s{k}" for k in range(10)), *range(10), 3.0, Int64(4)]
    # 30 distinct ids (3.0 is 3, Int64(4) is 4): ints, then strings, then ObjectIds.
    points = sample_split_points(sample, 3)
    assert points == [9, min(oids)]
    assert id_cmp(points[0], points[1]) < 0


@given(st.lists(st.integers(0, 10_000), unique=True, max_size=200), st.integers(1, 16))
def test_evenly_gives_at_most_n_minus_one_increasing_points(points: list[int], n: int) -> None:
    """Never more ranges than asked, never an empty or reversed range."""
    chosen = evenly(sorted(points), n)
    assert len(chosen) <= max(0, n - 1)
    assert chosen == sorted(set(chosen))
    assert set(chosen) <= set(points)


def test_old_single_range_checkpoint_resumes_after_its_last_id() -> None:
    """{done, last_id, read_at} (capture before ranges) is one open range after last_id."""
    ranges = ranges_from_checkpoint({"done": False, "last_id": 41, "read_at": 7})
    assert ranges is not None
    assert len(ranges) == 1
    assert ranges[0].queries() == range_id_filters(41, None)
    assert ranges_from_checkpoint({"done": False, "last_id": None}) is None


def test_ranges_round_trip_through_the_checkpoint() -> None:
    """Stored ranges come back as they were, resumed after each one's last id."""
    ranges = ranges_between([100, "m"])
    ranges[0].last_id, ranges[0].has_last, ranges[0].copied = 40, True, 40
    ranges[2].done = True
    back = ranges_from_checkpoint({"done": False, "ranges": [r.to_doc() for r in ranges]})
    assert back == ranges
    assert back[0].queries() == range_id_filters(40, 100)
    assert back[1].queries() == range_id_filters(100, "m")


def test_range_resumed_after_the_null_id_skips_only_null() -> None:
    """has_last with a None last_id: the null _id was copied, not 'start from the beginning'."""
    r = IdRange(hi=5, last_id=None, has_last=True)
    assert r.queries() == range_id_filters(None, 5, lo_is_null=True)
    assert {"_id": {"$type": ["null"]}} not in r.queries()
    assert {"_id": {"$type": ["minKey"]}} not in r.queries()


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ranges_between_chains_bounds(n: int) -> None:
    """Each range starts where the previous ends; the first and last are open."""
    points = list(range(1, n))
    ranges = ranges_between(points)
    assert ranges[0].lo is None
    assert ranges[-1].hi is None
    assert [r.hi for r in ranges[:-1]] == [r.lo for r in ranges[1:]] == points
