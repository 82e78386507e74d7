"""Envelope codec: lossless BSON types inside Avro, clear errors on corrupt input."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import bson
import pytest
from bson import Binary, ObjectId, Timestamp
from bson.decimal128 import Decimal128
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator import events
from stream_migrator.errors import EnvelopeError


def _event(doc: dict | None, op: events.Op = "insert", doc_id: object = None) -> events.ChangeEvent:
    return events.ChangeEvent(
        op=op,
        ns="shop.orders",
        doc_id=doc_id if doc_id is not None else (doc or {}).get("_id", 1),
        document=doc,
        cluster_time=events.version_of(Timestamp(1_700_000_000, 7)),
        captured_at_ms=1_700_000_000_123,
        resume_token={"_data": "8264F0A1"},
    )


def test_roundtrip_keeps_bson_types() -> None:
    """ObjectId, Decimal128, tz-aware datetime, binary, UUID and nested arrays survive."""
    doc = {
        "_id": ObjectId(),
        "total": Decimal128(Decimal("1234.5600")),
        "at": dt.datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=dt.UTC),
        "blob": Binary(b"\x00\x01\xff", 0),
        "uid": Binary.from_uuid(uuid.UUID("12345678-1234-5678-1234-567812345678")),
        "items": [[1, 2, {"deep": [Decimal128("0.1"), None]}], []],
        "n": 2**40,
    }
    back = events.decode(events.encode(_event(doc)))
    assert back.document is not None
    # Byte-identical BSON: the strictest notion of "lossless" (Python decodes binary
    # subtype 0 as bytes, which re-encodes to the same BSON).
    assert bson.encode(back.document) == bson.encode(doc)
    assert isinstance(back.document["total"], Decimal128)
    assert back.document["total"].to_decimal() == Decimal("1234.5600")
    assert back.document["at"] == doc["at"]
    assert back.doc_id == doc["_id"]
    assert back.resume_token == {"_data": "8264F0A1"}
    assert back.cluster_time == events.version_of(Timestamp(1_700_000_000, 7))


def test_roundtrip_delete_has_no_document() -> None:
    """A delete carries the key and no document."""
    back = events.decode(events.encode(_event(None, op="delete", doc_id="order-9")))
    assert back.op == "delete"
    assert back.document is None
    assert back.doc_id == "order-9"


def test_version_orders_like_cluster_time() -> None:
    """Packed versions compare exactly like (seconds, increment)."""
    a, b, c = Timestamp(100, 5), Timestamp(100, 6), Timestamp(101, 0)
    assert events.version_of(a) < events.version_of(b) < events.version_of(c)
    assert events.timestamp_of(events.version_of(b)) == b


def test_key_is_canonical_for_equal_ids() -> None:
    """Equal _id values give identical Kafka keys (so one partition per document)."""
    oid = ObjectId()
    assert events.key_bytes(oid) == events.key_bytes(ObjectId(str(oid)))
    assert events.key_bytes(oid) != events.key_bytes(ObjectId())


@pytest.mark.parametrize(
    ("value", "needle"),
    [(b"", "empty"), (b"\x07abc", "format byte 0x07"), (b"\x01\xff\xff", "corrupt")],
)
def test_decode_rejects_bad_bytes_with_reason(value: bytes, needle: str) -> None:
    """Malformed Kafka values raise EnvelopeError naming the problem."""
    with pytest.raises(EnvelopeError, match=needle):
        events.decode(value)


bson_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20).map(lambda b: Binary(b, 0)),
    st.decimals(
        min_value=-(10**20), max_value=10**20, allow_nan=False, allow_infinity=False, places=4
    ).map(Decimal128),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)
bson_values = st.recursive(
    bson_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(min_size=1, max_size=8).filter(
                lambda k: "\x00" not in k and not k.startswith("$")
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(
            lambda k: "\x00" not in k and k != "_id" and not k.startswith("$")
        ),
        bson_values,
        max_size=6,
    )
)
def test_roundtrip_property(fields: dict) -> None:
    """Any BSON document survives encode/decode unchanged."""
    doc = {"_id": ObjectId(), **fields}
    back = events.decode(events.encode(_event(doc))).document
    assert back is not None
    assert bson.encode(back) == bson.encode(doc)


def test_hashable_id_keeps_true_apart_from_one() -> None:
    """``True`` and ``1`` are two _ids to MongoDB (bool, number): two keys; 1 and 1.0 are one."""
    assert events.hashable_id(True) != events.hashable_id(1)
    assert events.hashable_id(False) != events.hashable_id(0)
    assert events.hashable_id(1) == events.hashable_id(1.0)
    assert events.hashable_id({"a": 1}) == events.hashable_id({"a": 1})


@pytest.mark.parametrize(
    "key",
    [
        events.key_bytes(1) + events.key_bytes(2),  # two documents where one belongs
        events.key_bytes(1)[:-1],  # cut short: the document's bytes would complete it
        b"\x05\x00\x00\x00\x00",  # {} : no _id
    ],
)
def test_decode_rejects_a_corrupt_key_however_it_spills(key: bytes) -> None:
    """A key that is not one ``{_id}`` document is a corrupt envelope, not a shifted event."""
    value = events.encode_raw("insert", "shop.orders", key, bson.encode({"_id": 1}), 1, 2, None)
    with pytest.raises(EnvelopeError, match="corrupt"):
        events.decode(value)
