"""Validating BSON documents against the orders .avsc schemas, with field paths in errors."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128
from fastavro.validation import validate as fastavro_validate
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator.demo.data import v1_order
from stream_migrator.errors import TransformError
from stream_migrator.spec import get_spec
from stream_migrator.spec.avro import AvroSchema, to_avro
from stream_migrator.spec.avro_generate import generate

SPEC = get_spec("orders.v1_to_v2")
assert SPEC.source_schema is not None
assert SPEC.target_schema is not None
V1: AvroSchema = SPEC.source_schema
V2: AvroSchema = SPEC.target_schema


def _v2() -> dict[str, Any]:
    return SPEC.transform(v1_order(random.Random(1), 7))


def test_demo_documents_match_v1_and_migrate_to_valid_v2() -> None:
    """Every demo order is a valid v1 document and its transform a valid v2 document."""
    rng = random.Random(3)
    for i in range(200):
        doc = v1_order(rng, i)
        assert V1.violations(doc) == []
        v2 = SPEC.migrate(doc)
        assert V2.violations(v2) == []
        assert SPEC.inverse(v2) == doc


def test_meta_field_is_not_part_of_the_target_schema() -> None:
    """validate_target ignores _sm (the writer adds it after validation)."""
    doc = {**_v2(), "_sm": {"v": 1}}
    SPEC.validate_target(doc)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["address"].update(zip=12345), "address.zip: expected string, got int"),
        (lambda d: d["items"][0].pop("qty"), "items[0].qty: missing (required by Item)"),
        (lambda d: d.update(total=19.99), "total: expected null or decimal128, got double"),
        (lambda d: d.update(_id=1.5), "_id: expected objectId or long or string, got double"),
        (lambda d: d.update(created_at="2024"), "created_at: expected null or date, got string"),
        (lambda d: d.pop("status"), "status: missing (required by Order)"),
        (
            lambda d: d.update(address="1 Main St"),
            "address: expected null or record Address, got string",
        ),
        (
            lambda d: d["customer"].update(nmae="x"),
            "customer.nmae: not in schema (Customer has name); add it to the schema or drop it "
            "in the spec",
        ),
    ],
)
def test_violation_names_the_field_path(mutate: Any, expected: str) -> None:
    """Each violation raises TransformError whose message and field give the exact path."""
    doc = _v2()
    mutate(doc)
    assert V2.violations(doc) == [expected]
    with pytest.raises(TransformError) as info:
        SPEC.validate_target(doc)
    assert str(info.value) == f"does not match schema orders.v2: {expected}"
    assert info.value.field == expected.split(":", maxsplit=1)[0]
    assert info.value.step == "schema"


def test_union_reports_each_branch() -> None:
    """A value matching no branch of a union lists the branches."""
    schema = AvroSchema(
        "t",
        {
            "type": "record",
            "name": "T",
            "fields": [
                {
                    "name": "n",
                    "type": ["null", "string", {"type": "string", "logicalType": "objectId"}],
                }
            ],
        },
    )
    assert schema.violations({"n": 5}) == ["n: expected null or string or objectId, got int"]
    assert schema.violations({"n": ObjectId()}) == []


def test_int_field_rejects_int64_range_and_double() -> None:
    """BSON-strict numbers: int is 32-bit, a double is not an int, a bool is not a number."""
    schema = AvroSchema(
        "t",
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "i", "type": "int"}, {"name": "d", "type": "double"}],
        },
    )
    assert schema.violations({"i": 2**40, "d": 1.0}) == ["i: expected int, got long"]
    assert schema.violations({"i": True, "d": 1}) == [
        "i: expected int, got bool",
        "d: expected double, got int",
    ]


@given(st.integers(0, 2**32))
def test_generated_documents_are_valid_and_accepted_by_fastavro(seed: int) -> None:
    """Generated v1/v2 documents pass our validator and, converted, fastavro's writer check."""
    rng = random.Random(seed)
    for schema in (V1, V2):
        doc = generate(schema, rng)
        assert schema.violations(doc) == []
        assert fastavro_validate(to_avro(copy.deepcopy(doc), schema), schema.schema)


def test_to_avro_maps_bson_types_to_the_documented_forms() -> None:
    """ObjectId and Decimal128 become strings; dates stay datetimes for timestamp-millis."""
    doc = _v2()
    out = to_avro(doc, V2)
    assert out["_id"] == str(doc["_id"])
    assert out["total"] == str(doc["total"].to_decimal())
    assert out["created_at"] == doc["created_at"]
    assert isinstance(doc["total"], Decimal128)
