"""id_order: MongoDB's _id order and the range filters a parallel snapshot reads by.

The filters are checked against a model of how MongoDB matches them (comparisons
only inside the operand's type bracket, NaN matched by no ``$gt``/``$lte`` but
its own) over mixed-type ids; tests/integration/test_snapshot_parallel.py runs
the same filters on the server.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
from typing import Any

import pytest
from bson import Binary, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.decimal128 import Decimal128
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_migrator.id_order import (
    after_id_filters,
    id_before,
    id_cmp,
    is_split_point,
    range_id_filters,
    type_rank,
)

_ALIAS_RANK = {
    alias: type_rank(example)
    for alias, example in [
        ("minKey", MinKey()),
        ("null", None),
        ("int", 1),
        ("long", Int64(1)),
        ("double", 1.0),
        ("decimal", Decimal128("1")),
        ("string", "a"),
        ("object", {}),
        ("binData", b""),
        ("objectId", ObjectId()),
        ("bool", True),
        ("date", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        ("timestamp", Timestamp(1, 1)),
        ("regex", Regex("a")),
        ("maxKey", MaxKey()),
    ]
}


def _nan(v: Any) -> bool:
    if isinstance(v, float):
        return math.isnan(v)
    return isinstance(v, Decimal128) and v.to_decimal().is_nan()


def _op_matches(op: str, arg: Any, v: Any) -> bool:
    if op == "$type":
        return type_rank(v) in {_ALIAS_RANK[a] for a in arg}
    if op == "$not":
        return not all(_op_matches(o, a, v) for o, a in arg.items())
    if type_rank(v) != type_rank(arg):
        return False  # a comparison matches only its operand's bracket
    if _nan(v) or _nan(arg):
        return op in {"$gte", "$lte"} and _nan(v) and _nan(arg)
    c = id_cmp(v, arg)
    return {"$gt": c > 0, "$gte": c >= 0, "$lt": c < 0, "$lte": c <= 0}[op]


def matches(query: dict[str, Any], v: Any) -> bool:
    """Whether MongoDB's ``find(query)`` returns a document with ``_id`` ``v``."""
    if not query:
        return True
    assert set(query) == {"_id"}, query
    return all(_op_matches(op, arg, v) for op, arg in query["_id"].items())


_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_small_docs = st.dictionaries(
    st.sampled_from(["a", "b", "c"]), st.integers(-3, 3) | st.text("xy", max_size=2), max_size=2
)
_splittable = st.one_of(
    st.integers(-50, 50),
    _INT64.map(Int64),
    st.floats(allow_nan=False, allow_infinity=True, width=32),
    st.decimals(-50, 50, places=1, allow_nan=False).map(lambda d: Decimal128(str(d))),
    st.text("abc", max_size=3),
    _small_docs,
    st.binary(max_size=3),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.booleans(),
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1),
        max_value=dt.datetime(2030, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda d: d.replace(microsecond=0)),
    st.tuples(st.integers(0, 5), st.integers(0, 5)).map(lambda t: Timestamp(*t)),
)
ids_strategy = st.one_of(
    _splittable,
    st.just(float("nan")),
    st.just(Decimal128("NaN")),
    st.just(None),
    st.just(MinKey()),
    st.just(MaxKey()),
    st.text("ab", max_size=2).map(Regex),
)


def _distinct(values: list[Any]) -> list[Any]:
    """Sorted in BSON order, one of each value MongoDB holds equal (1 == 1.0 == Int64(1))."""
    ordered = sorted(values, key=functools.cmp_to_key(id_cmp))
    return [v for n, v in enumerate(ordered) if n == 0 or id_cmp(ordered[n - 1], v) != 0]


def _select(filters: list[dict[str, Any]], ids: list[Any]) -> list[list[Any]]:
    return [[v for v in ids if matches(f, v)] for f in filters]


def _in_bson_order(groups: list[list[Any]]) -> bool:
    flat = [v for g in groups for v in g]
    return all(id_cmp(a, b) < 0 for a, b in itertools.pairwise(flat))


@settings(max_examples=400, deadline=None)
@given(st.lists(ids_strategy, max_size=40), st.lists(_splittable, max_size=6))
def test_ranges_cut_at_any_split_points_hold_each_id_once(
    raw_ids: list[Any], raw_points: list[Any]
) -> None:
    """(None, s1], (s1, s2], ..., (sk, None): every id in exactly one range, in BSON order."""
    ids = _distinct(raw_ids)
    points = _distinct([p for p in raw_points if is_split_point(p)])
    edges: list[Any] = [None, *points, None]
    seen: list[Any] = []
    for lo, hi in itertools.pairwise(edges):
        groups = _select(range_id_filters(lo, hi), ids)
        assert _in_bson_order(groups), (lo, hi, groups)
        got = [v for g in groups for v in g]
        for v in got:
            assert lo is None or id_cmp(lo, v) < 0, (lo, hi, v)
            assert hi is None or id_cmp(v, hi) <= 0, (lo, hi, v)
        seen += got
    assert len(seen) == len(ids)
    assert _distinct(seen) == ids or [repr(v) for v in _distinct(seen)] == [repr(v) for v in ids]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(ids_strategy, min_size=1, max_size=30),
    st.lists(_splittable, max_size=3),
    st.data(),
)
def test_a_range_resumed_after_its_last_copied_id_reads_exactly_the_rest(
    raw_ids: list[Any], raw_points: list[Any], data: st.DataObject
) -> None:
    """range_id_filters(last_id, hi) gives the range's ids after last_id, in order, once each."""
    ids = _distinct(raw_ids)
    points = _distinct([p for p in raw_points if is_split_point(p)])
    edges: list[Any] = [None, *points, None]
    k = data.draw(st.integers(0, len(edges) - 2))
    lo, hi = edges[k], edges[k + 1]
    inside = [v for g in _select(range_id_filters(lo, hi), ids) for v in g]
    if not inside:
        return
    at = data.draw(st.integers(0, len(inside) - 1))
    last = inside[at]
    groups = _select(range_id_filters(last, hi, lo_is_null=last is None), ids)
    rest = [v for g in groups for v in g]
    expected = inside[at + 1 :]
    if isinstance(last, Regex):
        # No range operator takes a regex: the regex bracket is read again (never lost).
        assert all(any(id_cmp(v, r) == 0 for r in rest) for v in expected)
        return
    assert _in_bson_order(groups)
    assert [repr(v) for v in rest] == [repr(v) for v in expected], (last, hi)


@settings(max_examples=200, deadline=None)
@given(st.lists(ids_strategy, max_size=30), ids_strategy)
def test_after_id_filters_is_the_range_open_above(raw_ids: list[Any], last: Any) -> None:
    """after_id_filters(x) selects what range_id_filters(x, None) does: every id after x."""
    ids = _distinct(raw_ids)
    after = [v for g in _select(after_id_filters(last), ids) for v in g]
    ranged = range_id_filters(last, None, lo_is_null=last is None)
    assert [repr(v) for v in after] == [
        repr(v) for v in (v for g in _select(ranged, ids) for v in g)
    ]
    if not isinstance(last, Regex):
        assert [repr(v) for v in after] == [repr(v) for v in ids if id_cmp(last, v) < 0]


@settings(max_examples=300, deadline=None)
@given(ids_strategy, ids_strategy, ids_strategy)
def test_id_cmp_is_a_total_order(a: Any, b: Any, c: Any) -> None:
    """Antisymmetric and transitive on mixed types: safe for sorting and merge joins."""
    assert id_cmp(a, b) == -id_cmp(b, a)
    if id_cmp(a, b) <= 0 and id_cmp(b, c) <= 0:
        assert id_cmp(a, c) <= 0
    assert id_before(a, b) == (id_cmp(a, b) < 0)


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        (float("nan"), float("-inf")),  # NaN sorts before every number
        (Decimal128("NaN"), -(2**62)),
        (Int64(2), Decimal128("2.5")),
        ({"a": 1}, {"a": 1, "b": 0}),  # a prefix first
        ({"a": 5}, {"b": 0}),  # field names before values
        ({"a": 9}, {"a": "x"}),  # element types before names and values
        (b"\xff", b"\x00\x00"),  # binary: length first
        (Binary(b"\x01", 0), Binary(b"\x01", 4)),  # then subtype
        (None, -1),
        ("z", ObjectId()),
        (ObjectId(), False),
    ],
)
def test_id_cmp_follows_mongodb_order(smaller: Any, larger: Any) -> None:
    """Cases from MongoDB's comparison order (BSONElement::woCompare)."""
    assert id_cmp(smaller, larger) == -1
    assert id_cmp(larger, smaller) == 1


def test_numbers_equal_across_types_are_one_id() -> None:
    """1, 1.0, Int64(1) and Decimal128('1') are the same _id to a unique index."""
    assert id_cmp(1, 1.0) == id_cmp(Int64(1), Decimal128("1")) == 0
    assert id_cmp(float("nan"), Decimal128("NaN")) == 0


@pytest.mark.parametrize(
    "value", [None, MinKey(), MaxKey(), float("nan"), Decimal128("NaN"), Regex("a")]
)
def test_values_without_range_operators_are_no_split_points(value: Any) -> None:
    """null, MinKey, MaxKey, NaN and regexes cannot bound a range; range_id_filters says so."""
    assert not is_split_point(value)
    if value is not None:  # None as hi is the open end
        with pytest.raises(ValueError, match="cannot bound"):
            range_id_filters(None, value)


def test_range_filters_cross_brackets_one_query_each() -> None:
    """(5, 'm']: the numbers after 5, then strings up to 'm'; the open range is one query."""
    assert range_id_filters(None, None) == [{}]
    assert range_id_filters(5, "m") == [{"_id": {"$gt": 5}}, {"_id": {"$lte": "m"}}]
    assert range_id_filters(1, 3) == [{"_id": {"$gt": 1, "$lte": 3}}]
    assert range_id_filters("b", "a") == []
    first = range_id_filters(None, 7)
    assert first[-1] == {"_id": {"$type": ["int", "long", "double", "decimal"], "$not": {"$gt": 7}}}
