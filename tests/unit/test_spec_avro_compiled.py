"""The compiled schema check accepts exactly what the message-building walk accepts.

``AvroSchema.is_valid`` (closures compiled once per schema) answers the worker's
question for every document; the walk in ``avro_validate.find_violations`` builds
the messages of the invalid ones. These property tests feed both the same near-valid
documents (each field either of its type or anything else) and require the same verdict.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import fastavro
import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_migrator.spec import get_spec
from stream_migrator.spec.avro import AvroSchema
from stream_migrator.spec.avro_validate import find_violations, resolve

SPEC = get_spec("orders.v1_to_v2")
_OID = {"type": "string", "logicalType": "objectId"}
_DEC = {"type": "string", "logicalType": "decimal128"}
_TS = {"type": "long", "logicalType": "timestamp-millis"}
assert SPEC.source_schema is not None
assert SPEC.target_schema is not None

_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31) - 2, 2**31 + 1),
    st.sampled_from([2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63), 2**63, 2**70]),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.decimals(-(10**9), 10**9, places=2).map(Decimal128),
    st.just(dt.datetime(2024, 1, 15, tzinfo=dt.UTC)),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.just({}),
    st.just([]),
)

_PARSED: Any = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Node",
        "namespace": "t",
        "fields": [
            {"name": "i", "type": "int"},
            {"name": "f", "type": ["float", "double", "boolean"]},
            {"name": "b", "type": ["null", "bytes"], "default": None},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
            {"name": "x", "type": {"type": "fixed", "name": "X", "size": 2}},
            {"name": "m", "type": {"type": "map", "values": ["long", "string"]}},
            {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "d", "type": {"type": "int", "logicalType": "date"}, "default": 0},
            {"name": "again", "type": ["null", "E", "X"], "default": None},
            {
                "name": "next",
                "type": ["null", "Node", {"type": "array", "items": "Node"}],
                "default": None,
            },
        ],
    }
)
ALL_KINDS = AvroSchema("kinds", _PARSED, named=_PARSED["__named_schemas"])


def _near(  # noqa: PLR0911 - one branch per Avro type
    schema: Any, named: dict[str, Any], depth: int
) -> st.SearchStrategy[Any]:
    """Values of ``schema``'s shape, each part now and then of any other type."""
    schema = resolve(schema, named)
    if depth > 3:
        return _anything
    if isinstance(schema, list):
        return _mostly(st.one_of(*(_near(b, named, depth) for b in schema)))
    if isinstance(schema, str):
        return _mostly(_PRIMITIVES.get(schema, _anything), _wrong(schema))
    if schema.get("logicalType") in _LOGICAL:
        logical = schema["logicalType"]
        return _mostly(_LOGICAL[logical], _wrong(logical))
    kind = schema["type"]
    if kind == "record":
        fields = {f["name"]: _near(f["type"], named, depth + 1) for f in schema["fields"]}
        required = {n: s for n, s in fields.items() if "default" not in _field(schema, n)}
        optional = {n: s for n, s in fields.items() if n not in required}
        return _mostly(
            st.fixed_dictionaries(required, optional=optional),
            st.fixed_dictionaries({}, optional={**fields, "extra": _anything}),
        )
    if kind == "array":
        return _mostly(st.lists(_near(schema["items"], named, depth + 1), max_size=3))
    if kind == "map":
        values = _near(schema["values"], named, depth + 1)
        return _mostly(st.dictionaries(st.text(max_size=2), values, max_size=2))
    if kind == "enum":
        return _mostly(st.sampled_from(schema["symbols"]), st.just("C"))
    if kind == "fixed":
        size = schema["size"]
        return _mostly(st.binary(min_size=size, max_size=size), st.binary(max_size=size + 1))
    return _near(kind, named, depth)


def _mostly(
    valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any] = _anything
) -> st.SearchStrategy[Any]:
    """``valid`` 15 times in 16, else ``wrong``: whole documents are valid often enough."""
    return st.integers(0, 15).flatmap(lambda n: wrong if n == 0 else valid)


def _wrong(kind: str) -> st.SearchStrategy[Any]:
    """Anything, or one of the values BSON-strictness turns away from ``kind``."""
    return st.sampled_from(_NEAR_MISSES.get(kind, [None])) | _anything


_NEAR_MISSES: dict[str, list[Any]] = {
    "int": [True, Int64(1), 2**31, -(2**31) - 1, 1.0],
    "long": [False, 2**63, -(2**63) - 1, 1.0, Decimal128("1")],
    "double": [1, Int64(1), True, Decimal128("1.5")],
    "float": [1, Int64(1), False],
    "string": [b"s", ObjectId(b"123456789012")],
    "bytes": ["s"],
    "boolean": [0, 1],
    "null": [0, "", {}],
    "objectId": ["65a1f0c2e4b0a1b2c3d4e5f6", b"123456789012"],
    "decimal128": ["1.5", 1.5],
    "timestamp-millis": [0, "2024-01-15", dt.date(2024, 1, 15)],
    "date": [0, dt.date(2024, 1, 15)],
}
_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**63), 2**63 - 1).map(Int64),
    "float": st.floats(allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=3),
    "string": st.text(max_size=3),
}
_LOGICAL: dict[str, st.SearchStrategy[Any]] = {
    "objectId": st.binary(min_size=12, max_size=12).map(ObjectId),
    "decimal128": st.decimals(-(10**9), 10**9, places=2).map(Decimal128),
    "timestamp-millis": st.just(dt.datetime(2024, 1, 15, tzinfo=dt.UTC)),
    "date": st.just(dt.datetime(2024, 1, 15, tzinfo=dt.UTC)),
}


def _field(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["fields"] if f["name"] == name)


def _walk_finds_nothing(schema: AvroSchema, doc: Any) -> bool:
    return not find_violations(doc, schema.schema, schema.named, 1)


def _documents(schema: AvroSchema) -> st.SearchStrategy[Any]:
    return _near(schema.schema, schema.named, 0)


@settings(max_examples=300)
@given(st.data())
def test_compiled_check_agrees_with_the_walk(data: st.DataObject) -> None:
    """orders v1, v2 and a schema of every Avro kind: same verdict on near-valid documents."""
    for schema in (SPEC.source_schema, SPEC.target_schema, ALL_KINDS):
        assert schema is not None
        doc = data.draw(_documents(schema), label=schema.name)
        assert schema.is_valid(doc) == _walk_finds_nothing(schema, doc)


def test_compiled_check_follows_recursive_named_types() -> None:
    """A record holding itself (by name, in a union and an array) is checked all the way down."""
    leaf = {"i": 1, "f": 1.0, "e": "A", "x": b"xy", "m": {}, "u": "id"}
    deep = {**leaf, "next": [{**leaf, "next": {**leaf, "again": b"ab"}}]}
    assert ALL_KINDS.is_valid(deep)
    assert ALL_KINDS.violations(deep) == []
    broken = {**leaf, "next": [{**leaf, "next": {**leaf, "again": b"abc"}}]}
    assert not ALL_KINDS.is_valid(broken)
    assert ALL_KINDS.violations(broken) == [
        "next[0].next.again: expected null or enum E or fixed X, got binData"
    ]


def test_every_migrated_demo_order_is_valid_compiled() -> None:
    """The fast path is the one taken: migrated demo orders pass the compiled check."""
    for doc in SPEC.examples:
        assert SPEC.target_schema is not None
        assert SPEC.target_schema.is_valid(SPEC.transform(doc))


@pytest.mark.parametrize(
    ("kind", "accepted", "refused"),
    [
        ("double", [1.0, -0.0], [1, Int64(1), True, Decimal128("1.5")]),
        ("int", [0, 2**31 - 1, -(2**31)], [Int64(1), True, 2**31, -(2**31) - 1, 1.0]),
        ("long", [0, Int64(2**40), 2**63 - 1], [False, 2**63, 1.0, Decimal128("1")]),
        ("string", ["", "x"], [b"x", ObjectId(b"123456789012"), None]),
        ("boolean", [True, False], [0, 1, None]),
        ("bytes", [b""], ["x", bytearray(b"x")]),
        ("null", [None], [0, "", {}]),
        (_OID, [ObjectId(b"123456789012")], ["65a1f0c2e4b0a1b2c3d4e5f6", b"123456789012"]),
        (_DEC, [Decimal128("1.5")], ["1.5", 1.5]),
        (_TS, [dt.datetime(2024, 1, 15, tzinfo=dt.UTC)], [0, "2024-01-15", dt.date(2024, 1, 15)]),
    ],
)
def test_bson_strict_types_as_the_module_table_says(
    kind: Any, accepted: list[Any], refused: list[Any]
) -> None:
    """Each Avro type takes exactly the BSON type of the mapping: no int for a double, etc."""
    schema = AvroSchema(
        "t", {"type": "record", "name": "T", "fields": [{"name": "v", "type": kind}]}
    )
    for value in accepted:
        assert schema.is_valid({"v": value}), value
        assert schema.violations({"v": value}) == []
    for value in refused:
        assert not schema.is_valid({"v": value}), value
        assert schema.violations({"v": value}), value
