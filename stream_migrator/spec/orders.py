"""The ``orders`` v1 -> v2 migration.

v1: ``{cust_name, address: "12 Main St, Springfield, 12345", total: 19.99, status?}``
v2: ``{customer: {name}, address: {street, city, zip}, total: Decimal128, status}``
"""

from __future__ import annotations

from stream_migrator.spec.model import MigrationSpec
from stream_migrator.spec.steps import CastDecimal, Default, Rename, SplitString

ADDRESS_PATTERN = r"(?P<street>[^,]+),(?P<city>[^,]+),(?P<zip>\s*[0-9A-Za-z -]{3,10})"

ORDERS_V1_TO_V2 = MigrationSpec(
    name="orders.v1_to_v2",
    source_version="orders.v1",
    target_version="orders.v2",
    steps=(
        Rename("cust_name", "customer.name"),
        SplitString("address", ADDRESS_PATTERN, "{street}, {city}, {zip}"),
        CastDecimal("total"),
        Default("status", "pending"),
    ),
)
