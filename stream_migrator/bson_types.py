"""The BSON type of the values whose Python type alone does not say it."""

from __future__ import annotations

from typing import Any

from bson.int64 import Int64

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def scalar_type(value: Any) -> str | None:
    """``null``, ``bool``, ``int`` or ``long`` for None, a bool or an integer; else None.

    A bool is a Python int, so it is named first; an ``Int64`` is always a long,
    and a plain int is stored as a long only outside the int32 range.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if _INT32_MIN <= value <= _INT32_MAX else "long"
    return None
