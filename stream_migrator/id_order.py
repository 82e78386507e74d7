"""MongoDB's ``_id`` order: the one place that knows how BSON sorts and brackets types.

MongoDB sorts values of different BSON types by a fixed type order, and a
comparison operator (``$gt``, ``$lt``, ...) only matches values of the same type
bracket as its operand. So "every ``_id`` after ``x``" is not ``{_id: {$gt: x}}``:
that stops at the end of ``x``'s bracket. :func:`after_id_filters` gives the
queries that together continue across brackets, in BSON order.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import bson
from bson.decimal128 import Decimal128

# BSON comparison order of types (numbers compare across int/long/double/decimal).
TYPE_RANK = {
    "MinKey": 0,
    "NoneType": 1,
    "int": 2,
    "Int64": 2,
    "float": 2,
    "Decimal128": 2,
    "str": 3,
    "dict": 4,
    "SON": 4,
    "list": 5,
    "bytes": 6,
    "Binary": 6,
    "UUID": 6,
    "ObjectId": 7,
    "bool": 8,
    "datetime": 9,
    "Timestamp": 10,
    "Regex": 11,
    "MaxKey": 12,
}
#: ``$type`` aliases of each bracket an ``_id`` can hold (never an array), in BSON order.
#: Symbol (deprecated; PyMongo reads it as a string) is left out: mongo-java-server
#: rejects its alias, and a symbol ``_id`` is not something applications create.
_BRACKET_TYPES: list[tuple[int, list[str]]] = [
    (0, ["minKey"]),
    (1, ["null"]),
    (2, ["int", "long", "double", "decimal"]),
    (3, ["string"]),
    (4, ["object"]),
    (6, ["binData"]),
    (7, ["objectId"]),
    (8, ["bool"]),
    (9, ["date"]),
    (10, ["timestamp"]),
    (11, ["regex"]),
    (12, ["maxKey"]),
]


def type_rank(value: Any) -> int:
    """The BSON type bracket of ``value`` (its place in MongoDB's cross-type order)."""
    return TYPE_RANK.get(type(value).__name__, 6)


def id_before(a: Any, b: Any) -> bool:
    """``a`` sorts before ``b`` in MongoDB's ``_id`` order (types bracketed as BSON does)."""
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return ra < rb
    if ra == 2:
        return _number(a) < _number(b)
    try:
        return bool(a < b)
    except TypeError:
        return bson.encode({"v": a}) < bson.encode({"v": b})


def id_cmp(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` (for ``functools.cmp_to_key``)."""
    return -1 if id_before(a, b) else (1 if id_before(b, a) else 0)


def after_id_filters(last_id: Any) -> list[dict[str, Any]]:
    """Filters that, run one after the other sorted by ``_id``, select every id after ``last_id``.

    The first continues inside ``last_id``'s own type bracket (``$gt``); then one
    ``$type`` filter per later bracket, in BSON order. A scan resumed this way after
    a crash inside the numeric ids still reaches the strings and ObjectIds.
    """
    rank = type_rank(last_id)
    # MinKey is the one operand MongoDB does not bracket: {$gt: MinKey} matches every
    # other type, which the $type filters below already select (each id once).
    filters: list[dict[str, Any]] = [] if rank == 0 else [{"_id": {"$gt": last_id}}]
    filters.extend({"_id": {"$type": aliases}} for r, aliases in _BRACKET_TYPES if r > rank)
    return filters


def _number(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(int(value))
