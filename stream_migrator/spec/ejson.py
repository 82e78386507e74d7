"""YAML values to BSON values: MongoDB Extended JSON and YAML dates.

Extended JSON: ``{$oid: ...}``, ``{$date: ...}``, ``{$numberDecimal: ...}``,
``{$numberLong: ...}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from bson import ObjectId

from stream_migrator.spec import casts


def bson_value(value: Any) -> Any:
    """YAML value -> BSON-ready Python: plain dicts, Extended JSON and YAML dates converted."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key in _EJSON:
                return _EJSON[key](inner)
        return {str(k): bson_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [bson_value(v) for v in value]
    if isinstance(value, dt.datetime):
        return casts.convert(value, "date")
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return value


def _ejson_oid(value: Any) -> ObjectId:
    if not isinstance(value, str) or not ObjectId.is_valid(value):
        raise ValueError(f"$oid: {value!r} is not 24 hex digits")
    return ObjectId(value)


def _cast(operator: str, value: Any, kind: str) -> Any:
    try:
        return casts.convert(value, kind)
    except casts.CastFailure as exc:
        raise ValueError(f"{operator}: {exc}") from None


_EJSON: dict[str, Callable[[Any], Any]] = {
    "$oid": _ejson_oid,
    "$date": lambda value: _cast("$date", value, "date"),
    "$numberDecimal": lambda value: _cast("$numberDecimal", str(value), "decimal"),
    "$numberLong": lambda value: _cast("$numberLong", str(value), "long"),
}
