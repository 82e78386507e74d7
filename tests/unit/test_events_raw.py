"""Capture's raw path: keys, documents and envelopes from the server's bytes, same as decoded."""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import bson
import pytest
from bson import Binary, Code, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.decimal128 import Decimal128
from bson.raw_bson import RawBSONDocument
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator import events
from stream_migrator.errors import EnvelopeError

_NAMES = st.text(min_size=1, max_size=6).filter(lambda k: "\x00" not in k)
_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

bson_ids = st.recursive(
    st.one_of(
        st.binary(min_size=12, max_size=12).map(ObjectId),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        _INT64,
        _INT64.map(Int64),
        st.floats(allow_nan=True, allow_infinity=True),
        st.just(float("nan")),
        st.text(max_size=12),
        st.tuples(
            st.binary(max_size=20), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0xFF])
        ).map(lambda t: Binary(*t)),
        st.booleans(),
        st.none(),
        st.datetimes(
            min_value=dt.datetime(1, 1, 2),
            max_value=dt.datetime(9999, 12, 30),
            timezones=st.just(dt.UTC),
        ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
        st.tuples(
            st.integers(min_value=0, max_value=2**32 - 1),
            st.integers(min_value=0, max_value=2**32 - 1),
        ).map(lambda t: Timestamp(*t)),
        # Decimal128 holds 34 digits: larger values raise decimal.Inexact (not an id case).
        st.decimals(
            min_value=-(10**30), max_value=10**30, allow_nan=False, allow_infinity=False, places=3
        ).map(lambda d: Decimal128(str(d))),
        st.tuples(
            st.text(max_size=5).filter(lambda p: "\x00" not in p), st.sampled_from("ilmsux")
        ).map(lambda t: Regex(t[0], t[1])),
        st.just(MinKey()),
        st.just(MaxKey()),
        st.text(max_size=8).filter(lambda c: "\x00" not in c).map(Code),
    ),
    lambda children: (
        st.dictionaries(_NAMES, children, max_size=3)
        | st.fixed_dictionaries({"$ref": st.just("c"), "$id": children})
    ),
    max_leaves=6,
)


def _decoded_key(raw: bytes) -> bytes:
    """The key as capture made it before: decode the document, key_bytes of its _id."""
    return events.key_bytes(bson.decode(raw, events.BSON_OPTIONS)["_id"])


@given(doc_id=bson_ids, before=st.dictionaries(_NAMES.filter(lambda k: k != "_id"), _INT64))
def test_raw_key_is_byte_identical_to_key_bytes(doc_id: Any, before: dict[str, Any]) -> None:
    """id_key of a raw document equals key_bytes of its decoded _id, whatever the id's type."""
    raw = bson.encode({**before, "_id": doc_id, "after": [1, "x"]})
    assert events.id_key(RawBSONDocument(raw, events.RAW_OPTIONS)) == _decoded_key(raw)


def _element(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + b"_id\x00" + value


def _document(*elements: bytes) -> bytes:
    body = b"".join(elements) + b"\x00"
    return struct.pack("<i", len(body) + 4) + body


def _string(text: bytes) -> bytes:
    return struct.pack("<i", len(text) + 1) + text + b"\x00"


@pytest.mark.parametrize(
    "element",
    [
        _element(0x06, b""),  # undefined: decodes as None
        _element(0x0E, _string(b"sym")),  # symbol: decodes as a string
        _element(0x0C, _string(b"db.c") + b"\x01" * 12),  # DBPointer: decodes as a DBRef
        _element(0x05, struct.pack("<i", 6) + b"\x02" + struct.pack("<i", 2) + b"ab"),  # old binary
        _element(0x08, b"\x01"),
        _element(0x0B, b"a.c\x00im\x00"),  # regex
    ],
)
def test_raw_key_of_exotic_types_matches_key_bytes(element: bytes) -> None:
    """Types whose decoded value encodes differently still give key_bytes' bytes."""
    raw = _document(_element(0x10, b"\x01\x00\x00\x00").replace(b"_id", b"n__"), element)
    assert events.id_key(RawBSONDocument(raw, events.RAW_OPTIONS)) == _decoded_key(raw)


def test_raw_key_of_document_without_id_is_none() -> None:
    """No _id element, no key (the decoded mapping says the same)."""
    raw = bson.encode({"$set": {"a": 1}})
    assert events.id_key(RawBSONDocument(raw)) is None
    assert events.id_key(bson.decode(raw)) is None


def _raw(doc: dict[str, Any]) -> RawBSONDocument:
    """A change event as capture reads it: raw, nested documents raw too."""
    return RawBSONDocument(bson.encode(doc), events.RAW_OPTIONS)


_AT = Timestamp(1_700_000_000, 3)
_CHANGES = [
    # MongoDB: documentKey {_id}, fullDocument from updateLookup (or null once deleted).
    {"operationType": "insert", "documentKey": {"_id": 7}, "fullDocument": {"_id": 7, "a": 1}},
    {"operationType": "update", "documentKey": {"_id": "k"}, "fullDocument": None},
    {"operationType": "delete", "documentKey": {"_id": ObjectId()}},
    {"operationType": "insert", "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "p": "$5"}},
    # Sharded: the shard key rides along in documentKey.
    {"operationType": "insert", "documentKey": {"sk": 3, "_id": 2}, "fullDocument": {"_id": 2}},
    # mongo-java-server: the update spec as documentKey, the delta or {} as the document.
    {"operationType": "update", "documentKey": {"$set": {"a": 2}}, "fullDocument": {"_id": 9}},
    {"operationType": "update", "documentKey": {"$set": {"a": 2}}, "fullDocument": {}},
    {"operationType": "update", "documentKey": {"$set": {}}, "fullDocument": {"$set": {"a": 2}}},
    {"operationType": "insert", "documentKey": {}, "fullDocument": {"_id": 4, "$weird": 1}},
]


@pytest.mark.parametrize("change", _CHANGES)
def test_change_key_of_raw_change_matches_change_identity(change: dict[str, Any]) -> None:
    """Read raw, a change gives the key and document bytes the decoded one gave."""
    change = {"_id": {"_data": "82AB"}, "clusterTime": _AT, **change}
    doc_id, doc = events.change_identity(bson.decode(bson.encode(change), events.BSON_OPTIONS))
    key, raw_doc = events.change_key(_raw(change))
    if doc_id is events.NO_ID:
        assert (key, raw_doc) == (None, None)
        return
    assert key == events.key_bytes(doc_id)
    assert (None if raw_doc is None else events.bson_of(raw_doc)) == (
        None if doc is None else bson.encode(doc)
    )


def test_change_key_of_raw_delete_without_key_names_its_token() -> None:
    """A keyless delete read raw is the same EnvelopeError, its token shown decoded."""
    change = _raw({"_id": {"_data": "82CD"}, "operationType": "delete", "documentKey": {}})
    with pytest.raises(EnvelopeError, match=r"token \{'_data': '82CD'\}"):
        events.change_key(change)


@given(doc_id=bson_ids, total=_INT64, token=st.none() | st.just({"_data": "8264"}))
def test_encode_raw_writes_what_encode_writes(doc_id: Any, total: int, token: Any) -> None:
    """The raw path's envelope decodes as the decoded path's: the wire format holds.

    Byte for byte whenever the document's decoded form encodes back to its bytes; where
    it does not (a DBRef-shaped or symbol field) the envelope now keeps the server's.
    """
    raw = bson.encode({"_id": doc_id, "total": total})
    doc = bson.decode(raw, events.BSON_OPTIONS)
    event = events.ChangeEvent("snapshot", "shop.orders", doc["_id"], doc, 5, 6, token)
    key = events.id_key(RawBSONDocument(raw, events.RAW_OPTIONS))
    assert key is not None
    token_bytes = None if token is None else events.bson_of(_raw(token))
    value = events.encode_raw("snapshot", "shop.orders", key, raw, 5, 6, token_bytes)
    # Compared re-encoded: a NaN _id is unequal to itself.
    assert events.encode(events.decode(value)) == events.encode(event)
    if bson.encode(doc) == raw:
        assert value == events.encode(event)


# Envelopes written by the codec before the raw path (HEAD 8183448): they decode the same.
_OLD_UPDATE = bytes.fromhex(
    "01021673686f702e6f72646572732c16000000075f69640064f0a1b2c3d4e5f6012345670002f20179000000"
    "075f69640064f0a1b2c3d4e5f60123456713746f74616c00e2040000000000000000000000003c3009617400"
    "005a6d0da201000005626c6f6200020000000000ff126e000700000000000000046974656d73002100000003"
    "30001900000002736b75000200000041001071747900020000000000008e80808080c0f8d3ca01f6a1abfef9"
    "62023219000000025f64617461000900000038323634463041310000"
)
_OLD_DELETE = bytes.fromhex(
    "01061673686f702e6f72646572732c16000000025f696400080000006f726465722d3900000082808080a0c0"
    "f8d3ca01d0afabfef962023219000000025f64617461000900000038323634463041320000"
)
_OLD_SNAPSHOT = bytes.fromhex(
    "01081673686f702e6f72646572731c0e000000105f6964000500000000021c0e000000105f69640005000000"
    "00060800"
)


def test_envelopes_of_the_old_codec_decode_the_same() -> None:
    """Messages already in a topic keep decoding to the events they were written from."""
    update = events.decode(_OLD_UPDATE)
    oid = ObjectId("64f0a1b2c3d4e5f601234567")
    assert update == events.ChangeEvent(
        op="update",
        ns="shop.orders",
        doc_id=oid,
        document={
            "_id": oid,
            "total": Decimal128("12.50"),
            "at": dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC),
            "blob": b"\x00\xff",
            "n": Int64(7),
            "items": [{"sku": "A", "qty": 2}],
        },
        cluster_time=events.version_of(Timestamp(1_700_000_000, 7)),
        captured_at_ms=1_700_000_000_123,
        resume_token={"_data": "8264F0A1"},
    )
    assert isinstance(update.document and update.document["n"], Int64)
    assert events.decode(_OLD_DELETE) == events.ChangeEvent(
        "delete",
        "shop.orders",
        "order-9",
        None,
        events.version_of(Timestamp(1_700_000_001, 1)),
        1_700_000_001_000,
        {"_data": "8264F0A2"},
    )
    assert events.decode(_OLD_SNAPSHOT) == events.ChangeEvent(
        "snapshot", "shop.orders", 5, {"_id": 5}, 3, 4, None
    )
    for old in (_OLD_UPDATE, _OLD_DELETE, _OLD_SNAPSHOT):
        assert events.encode(events.decode(old)) == old


@given(doc_id=bson_ids, before=st.dictionaries(_NAMES.filter(lambda k: k != "_id"), _INT64))
def test_id_element_is_the_id_as_encoded(doc_id: Any, before: dict[str, Any]) -> None:
    """id_element gives the _id element's bytes, whatever its type (both key and compare use it)."""
    raw = bson.encode({**before, "_id": doc_id, "after": [1, "x"]})
    assert events.id_element(raw) == bson.encode({"_id": doc_id})[4:-1]


@pytest.mark.parametrize(
    "first",
    [
        _element(0x10, b"\x01\x00\x00\x00").replace(b"_id", b"n__"),  # a fixed-size field
        _element(0x02, _string(b"abc")).replace(b"_id", b"s__"),  # a variable-size one
    ],
)
def test_id_element_found_after_other_fields(first: bytes) -> None:
    """An _id that is not the first element (not how MongoDB stores it) is found by a walk."""
    element = _element(0x07, b"\x05" * 12)
    assert events.id_element(_document(first, element, first.replace(b"__", b"_2"))) == element


def test_id_element_of_document_without_id_is_none() -> None:
    """No _id element: None, not an error."""
    assert events.id_element(bson.encode({"a": 1, "b": "x"})) is None
    assert events.id_element(bson.encode({})) is None
