"""The orders v1 -> v2 spec on normal and edge-case documents."""

from __future__ import annotations

from decimal import Decimal

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128

from stream_migrator.errors import ConfigError, TransformError
from stream_migrator.spec import META_FIELD, get_spec

SPEC = get_spec("orders.v1_to_v2")


def test_transform_full_document() -> None:
    """All four steps: rename+nest, split address, cast total, default status."""
    oid = ObjectId()
    v1 = {
        "_id": oid,
        "cust_name": "Ada",
        "address": "12 Main St, Springfield, 12345",
        "total": 19.99,
        "items": [{"sku": "A", "qty": 2}],
    }
    v2 = SPEC.transform(v1)
    assert v2 == {
        "_id": oid,
        "customer": {"name": "Ada"},
        "address": {"street": "12 Main St", "city": "Springfield", "zip": "12345"},
        "total": Decimal128("19.99"),
        "items": [{"sku": "A", "qty": 2}],
        "status": "pending",
    }
    assert "cust_name" not in v1 or v1["cust_name"] == "Ada"  # input untouched
    assert v1["address"] == "12 Main St, Springfield, 12345"


def test_transform_keeps_existing_status_and_decimal() -> None:
    """An explicit status and an already-decimal total are left as they are."""
    v2 = SPEC.transform({"_id": 1, "status": "paid", "total": Decimal128("5.00")})
    assert v2["status"] == "paid"
    assert v2["total"] == Decimal128("5.00")


def test_transform_missing_fields() -> None:
    """Missing fields stay missing (no invented customer or address); status is defaulted."""
    assert SPEC.transform({"_id": 1}) == {"_id": 1, "status": "pending"}


def test_transform_nulls() -> None:
    """Null name, address and total stay null; null status gets the default."""
    v2 = SPEC.transform(
        {"_id": 1, "cust_name": None, "address": None, "total": None, "status": None}
    )
    assert v2 == {
        "_id": 1,
        "customer": {"name": None},
        "address": None,
        "total": None,
        "status": "pending",
    }


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"_id": 1, "address": "no commas here"}, "address"),
        ({"_id": 1, "address": "1 A St, Town"}, "address"),
        ({"_id": 1, "address": 42}, "address"),
        ({"_id": 1, "total": "twelve"}, "total"),
        ({"_id": 1, "total": float("inf")}, "total"),
        ({"_id": 1, "total": True}, "total"),
        ({"_id": 1, "total": [1]}, "total"),
    ],
)
def test_transform_rejects_malformed_with_field(doc: dict, field: str) -> None:
    """Malformed input raises TransformError naming the field (-> quarantine)."""
    with pytest.raises(TransformError) as info:
        SPEC.transform(doc)
    assert info.value.field == field
    assert field in str(info.value)


def test_transform_numeric_string_and_int_total() -> None:
    """A numeric string or an int total casts exactly."""
    assert SPEC.transform({"_id": 1, "total": " 7.10 "})["total"].to_decimal() == Decimal("7.10")
    assert SPEC.transform({"_id": 1, "total": 3})["total"] == Decimal128("3")


def test_transform_strips_previous_meta() -> None:
    """A stray _sm field from the source never reaches the target."""
    assert META_FIELD not in SPEC.transform({"_id": 1, META_FIELD: {"v": 5}})


def test_inverse_restores_v1() -> None:
    """inverse(transform(d)) == d for a document without the lossy cases."""
    v1 = {
        "_id": 1,
        "cust_name": "Ada",
        "address": "12 Main St, Springfield, 12345",
        "total": 19.99,
        "status": "paid",
    }
    assert SPEC.inverse(SPEC.transform(v1)) == v1


def test_unknown_spec_is_config_error() -> None:
    """Asking for a spec that does not exist lists the known ones."""
    with pytest.raises(ConfigError, match=r"orders\.v1_to_v2"):
        get_spec("nope")


def test_migrate_demo_malformed_address_names_address() -> None:
    """The demo's malformed orders fail the split step (-> quarantine) naming `address`."""
    import random

    from stream_migrator.demo.data import v1_order

    doc = {**v1_order(random.Random(0), 1), "address": "no commas here"}
    with pytest.raises(TransformError) as info:
        SPEC.migrate(doc)
    assert info.value.field == "address"
    assert info.value.step == "step 2 (split)"


def test_transform_is_pure_and_deterministic() -> None:
    """Transforming twice gives equal results and leaves the input untouched."""
    v1 = {"_id": 1, "cust_name": "Ada", "address": "1 A St, Town, 12345", "total": 2.5}
    before = dict(v1)
    assert SPEC.transform(v1) == SPEC.transform(v1)
    assert v1 == before


def test_migrate_accepts_partial_documents_the_spec_passes_through() -> None:
    """Missing fields and integer ids pass the v2 schema; only present fields are typed."""
    assert SPEC.migrate({"_id": 7, "cust_name": "n", "total": 1}) == {
        "_id": 7,
        "customer": {"name": "n"},
        "total": Decimal128("1"),
        "status": "pending",
    }
