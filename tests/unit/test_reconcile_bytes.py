"""The compare's byte-level shortcuts agree with its canonical rules (no servers)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import bson
import pytest
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator.canonical import doc_hash
from stream_migrator.reconcile.canonical import leaf_paths
from stream_migrator.reconcile.compare import (
    _NO_ID,
    Expectation,
    StoredDoc,
    _first_id,
    agrees_exactly,
    classify,
    merge_join,
)

OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def stored(doc: dict[str, Any]) -> StoredDoc:
    """A target copy as ``read_stored`` yields it (``_sm`` already projected away)."""
    body = bson.encode({k: v for k, v in doc.items() if k != "_sm"})
    return StoredDoc(bson.decode(body, OPTIONS)["_id"], body, OPTIONS)


@pytest.mark.parametrize(
    "doc_id", [ObjectId(), 7, -(2**31), 2**31 - 1, Int64(5), Int64(-(2**40)), 2**40]
)
def test_first_id_reads_objectid_int_and_long_like_the_decoder(doc_id: Any) -> None:
    """ObjectId, int and long ids are read from the bytes with the decoder's value and type."""
    body = bson.encode({"_id": doc_id, "x": 1})
    decoded = bson.decode(body, OPTIONS)["_id"]
    assert _first_id(body) == decoded
    assert type(_first_id(body)) is type(decoded)


def _id_second() -> bytes:
    """``{x: 1, _id: 2}`` as raw BSON (``bson.encode`` would move ``_id`` first)."""
    elements = b"\x10x\x00" + (1).to_bytes(4, "little") + b"\x10_id\x00" + (2).to_bytes(4, "little")
    return (len(elements) + 5).to_bytes(4, "little") + elements + b"\x00"


def test_first_id_reads_an_id_that_is_not_first() -> None:
    """An _id after other fields (events.id_element walks to it) reads as the decoder reads it."""
    assert _first_id(_id_second()) == bson.decode(_id_second())["_id"] == 2


@pytest.mark.parametrize(
    "body",
    [
        bson.encode({"_id": "s1"}),
        bson.encode({"_id": 1.5}),
        bson.encode({"_id": {"a": 1}}),
        bson.encode({"a": 1}),
    ],
)
def test_first_id_leaves_other_types_to_the_decoder(body: bytes) -> None:
    """A string, double or document id (or none): decode instead."""
    assert _first_id(body) is _NO_ID


def test_identical_bytes_agree_and_other_key_order_falls_back_to_canonical() -> None:
    """Same bytes prove agreement; reordered keys do not, but classify still finds no difference."""
    expected = {"_id": 1, "a": {"x": 1, "y": 2}, "b": [1, {"c": 2}]}
    reordered = {"_id": 1, "b": [1, {"c": 2}], "a": {"y": 2, "x": 1}, "_sm": {"v": 9}}
    assert agrees_exactly(Expectation(expected), stored({**expected, "_sm": {"v": 3}}))
    assert not agrees_exactly(Expectation(expected), stored(reordered))
    assert classify(Expectation(expected), stored(reordered).decode()) is None


@pytest.mark.parametrize("other", [1.0, True, Int64(1), Decimal128("1")])
def test_one_is_not_one_point_zero_nor_true_in_either_path(other: Any) -> None:
    """int 1 vs double 1.0, true, long 1, decimal 1: no byte agreement, and a type difference."""
    expected = Expectation({"_id": 1, "n": 1})
    copy = stored({"_id": 1, "n": other})
    assert not agrees_exactly(expected, copy)
    diff = classify(expected, copy.decode())
    assert diff is not None
    assert diff.kind == "type"


def test_nan_agrees_with_nan() -> None:
    """A NaN stored as BSON equals the NaN the spec produced, byte for byte and canonically."""
    expected = Expectation({"_id": 1, "score": math.nan, "n": {"x": math.nan}})
    assert expected.doc is not None
    copy = stored(dict(expected.doc))
    assert agrees_exactly(expected, copy)
    assert classify(expected, copy.decode()) is None


def test_filtered_or_rejected_source_never_agrees_by_bytes() -> None:
    """No migrated copy (filtered out, or untransformable): the shortcut never claims agreement."""
    copy = stored({"_id": 1})
    assert not agrees_exactly(Expectation(None, filtered=True), copy)
    assert not agrees_exactly(Expectation(None, rejected="bad"), copy)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)
_keys = st.text(alphabet="abcxyz_", min_size=1, max_size=3)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(_keys, inner, max_size=3),
    ),
    max_leaves=12,
)
_docs = st.dictionaries(_keys, _values, max_size=5).map(lambda d: {"_id": 1, **d})


@given(_docs, st.randoms())
def test_byte_agreement_implies_canonical_agreement(doc: dict[str, Any], rnd: Any) -> None:
    """Whenever the shortcut says "agrees", the canonical hashes are equal; shuffled keys too."""
    keys = list(doc)
    rnd.shuffle(keys)
    shuffled = {k: doc[k] for k in keys}
    for copy in (stored(doc), stored(shuffled)):
        decoded = copy.decode()
        if agrees_exactly(Expectation(doc), copy):
            assert doc_hash(doc) == doc_hash(decoded)
        assert (classify(Expectation(doc), decoded) is None) == (doc_hash(doc) == doc_hash(decoded))


@given(_docs)
def test_leaf_paths_of_migrated_copy_equal_those_of_stored_copy(doc: dict[str, Any]) -> None:
    """Coverage taken from the migrated copy (tuples included) equals that of the stored BSON."""
    assert list(leaf_paths(doc)) == list(leaf_paths(stored(doc).decode()))


def test_leaf_paths_list_each_path_once_in_document_order() -> None:
    """Array items' paths are folded and listed once, where they first occur."""
    doc = {"_id": 1, "items": [{"q": 1, "r": None}, {"s": 2, "q": 3}], "a": {"b": [{"c": 1}]}}
    assert list(leaf_paths(doc)) == [
        "_id",
        "items",
        "items.[].q",
        "items.[].s",
        "a",
        "a.b",
        "a.b.[].c",
    ]
    assert list(leaf_paths({"x": 1, "_sm": {"v": 1}}, "p")) == ["p.x", "p._sm", "p._sm.v"]


def _pairs(source_ids: list[Any], target_ids: list[Any]) -> list[tuple[Any, Any]]:
    src = iter([{"_id": i} for i in source_ids])
    tgt = iter([stored({"_id": i}) for i in target_ids])
    return [
        (None if s is None else s["_id"], None if t is None else t.doc_id)
        for s, t in merge_join(src, tgt)
    ]


def test_merge_join_pairs_ids_across_type_brackets_in_bson_order() -> None:
    """Numbers, strings, ObjectIds in BSON order: [5, X] against [X] is one missing, no extra."""
    oid = ObjectId()
    assert _pairs([5, oid], [oid]) == [(5, None), (oid, oid)]
    assert _pairs([1, "a", oid], [Int64(2), "a"]) == [
        (1, None),
        (None, Int64(2)),
        ("a", "a"),
        (oid, None),
    ]


def test_merge_join_pairs_equal_numbers_of_different_types() -> None:
    """1 and 1.0 are one _id to MongoDB: paired, so classify reports a type difference."""
    [(s, t)] = _pairs([1], [1.0])
    assert (s, t) == (1, 1.0)
    diff = classify(Expectation({"_id": 1}), stored({"_id": 1.0}).decode())
    assert diff is not None
    assert diff.kind == "type"
