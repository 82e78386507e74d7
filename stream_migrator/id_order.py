"""MongoDB's ``_id`` order: the one place that knows how BSON sorts and brackets types.

MongoDB sorts values of different BSON types by a fixed type order, and a
comparison operator (``$gt``, ``$lt``, ...) only matches values of the same type
bracket as its operand. So "every ``_id`` after ``x``" is not ``{_id: {$gt: x}}``:
that stops at the end of ``x``'s bracket. :func:`after_id_filters` gives the
queries that together continue across brackets, in BSON order, and
:func:`range_id_filters` those of one range of ids (a parallel snapshot's).

NaN is the one number comparisons do not order: MongoDB sorts it before every
other number, but ``$gt``/``$lt``/``$lte`` never match it (only ``$eq``, ``$lte``
and ``$gte`` with a NaN operand do). The filters here account for it, and
:func:`is_split_point` keeps it (with null, MinKey, MaxKey and regular
expressions, which have no usable range operators) out of range bounds.

Types this module does not bracket (Code, Symbol, DBPointer: not something
applications use as ``_id``) are read only by an unbounded scan (``[{}]``).
"""

from __future__ import annotations

import math
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
    "RawBSONDocument": 4,
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
_NUMBERS = 2
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
_ALIASES = dict(_BRACKET_TYPES)
#: Brackets whose values ``$gt``/``$lte`` order as the sort does (MinKey, null and
#: MaxKey hold one value each; a regular expression operand is refused by MongoDB).
_RANGED = {2, 3, 4, 6, 7, 8, 9, 10}


def type_rank(value: Any) -> int:
    """The BSON type bracket of ``value`` (its place in MongoDB's cross-type order)."""
    return TYPE_RANK.get(type(value).__name__, 6)


def id_before(a: Any, b: Any) -> bool:
    """``a`` sorts before ``b`` in MongoDB's ``_id`` order (types bracketed as BSON does)."""
    return id_cmp(a, b) < 0


def id_cmp(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` (for ``functools.cmp_to_key``).

    MongoDB's order (``BSONElement::woCompare``): type bracket first; numbers by value
    across int/long/double/decimal with NaN before all others; documents element by
    element (type, then field name, then value), the shorter prefix first; binary by
    length, then subtype, then bytes; regular expressions by pattern, then flags.
    """
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    return _SAME_BRACKET.get(ra, _cmp_plain)(a, b)


def _sign(x: Any, y: Any) -> int:
    return -1 if x < y else (1 if y < x else 0)


def _cmp_numbers(a: Any, b: Any) -> int:
    na, nb = _is_nan(a), _is_nan(b)
    if na or nb:
        return 0 if na and nb else (-1 if na else 1)
    return _sign(_number(a), _number(b))


def _cmp_documents(a: Any, b: Any) -> int:
    return _cmp_elements(_items(a), _items(b))


def _cmp_binary(a: Any, b: Any) -> int:
    return _sign(_binary_key(a), _binary_key(b))


def _cmp_alone(_a: Any, _b: Any) -> int:
    return 0  # MinKey, null, MaxKey: one value each


def _cmp_regex(a: Any, b: Any) -> int:
    return _sign((a.pattern, a.flags), (b.pattern, b.flags))


def _cmp_plain(a: Any, b: Any) -> int:
    try:
        return _sign(a, b)
    except TypeError:
        return _sign(bson.encode({"v": a}), bson.encode({"v": b}))


_SAME_BRACKET = {
    0: _cmp_alone,
    1: _cmp_alone,
    _NUMBERS: _cmp_numbers,
    4: _cmp_documents,
    5: _cmp_documents,
    6: _cmp_binary,
    11: _cmp_regex,
    12: _cmp_alone,
}


def is_split_point(value: Any) -> bool:
    """Whether ``value`` can bound a range of :func:`range_id_filters` (see module doc)."""
    return type_rank(value) in _RANGED and type(value).__name__ in TYPE_RANK and not _is_nan(value)


def after_id_filters(last_id: Any) -> list[dict[str, Any]]:
    """Filters that, run one after the other sorted by ``_id``, select every id after ``last_id``.

    The first continues inside ``last_id``'s own type bracket (``$gt``); then one
    ``$type`` filter per later bracket, in BSON order. A scan resumed this way after
    a crash inside the numeric ids still reaches the strings and ObjectIds.
    ``last_id`` is a value (None is the null ``_id``), never "no bound".
    """
    return _bracket_filters(last_id, True, None, False)


def range_id_filters(lo: Any, hi: Any, *, lo_is_null: bool = False) -> list[dict[str, Any]]:
    """Filters that, run one after the other sorted by ``_id``, select ``lo < _id <= hi``.

    ``lo`` None means from the first id, ``hi`` None to the last (``lo_is_null``: ``lo``
    is the null ``_id`` itself, a resume point). Open below, closed above, so that
    the ranges cut at split points ``s1 < ... < sk`` — ``(None, s1], (s1, s2], ...,
    (sk, None)`` — hold each id once, a range resumed after its last copied id is
    ``range_id_filters(last_id, hi)``, and ``range_id_filters(x, None)`` is
    :func:`after_id_filters` ``(x)``. One filter per BSON type bracket the range
    crosses, in BSON order (a comparison only matches its operand's bracket); an
    empty list when ``lo`` is not before ``hi``. ``hi`` must pass :func:`is_split_point`.
    """
    has_lo = lo is not None or lo_is_null
    if hi is not None and not is_split_point(hi):
        raise ValueError(f"range_id_filters: {hi!r} cannot bound a range of _ids")
    if not has_lo and hi is None:
        return [{}]
    if has_lo and hi is not None and id_cmp(lo, hi) >= 0:
        return []
    return _bracket_filters(lo, has_lo, hi, hi is not None)


def _bracket_filters(lo: Any, has_lo: bool, hi: Any, has_hi: bool) -> list[dict[str, Any]]:
    rl = type_rank(lo) if has_lo else -1
    rh = type_rank(hi) if has_hi else 13
    filters: list[dict[str, Any]] = []
    if has_lo:
        # Inside lo's own bracket: what sorts after lo (and up to hi, when hi is there too).
        after: dict[str, Any] | None
        if rl == _NUMBERS and _is_nan(lo):
            after = {"$gte": -math.inf}  # NaN sorts first: every other number is after it
        elif rl in _RANGED:
            after = {"$gt": lo}
        elif rl == 11:
            # MongoDB refuses a regex operand: the regex bracket is read again from its
            # start (its documents twice, never lost; the sink's version guard dedups).
            after = {"$type": _ALIASES[11]}
        else:
            # MinKey, null and MaxKey are alone in their brackets. {$gt: MinKey} would
            # match every type: the $type filters below already select those, once each.
            after = None
        if after is not None:
            if rl == rh:
                after = {**after, "$lte": hi}
            filters.append({"_id": after})
    for rank, aliases in _BRACKET_TYPES:
        if rl < rank < rh:
            filters.append({"_id": {"$type": aliases}})
    if has_hi and rh != rl:
        # From the start of hi's bracket up to hi. Numbers: $lte never matches NaN,
        # which sorts first in the bracket, so it is "a number, not > hi".
        if rh == _NUMBERS:
            filters.append({"_id": {"$type": _ALIASES[_NUMBERS], "$not": {"$gt": hi}}})
        else:
            filters.append({"_id": {"$lte": hi}})
    return filters


def _is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, Decimal128):
        return value.to_decimal().is_nan()
    return False


def _number(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(int(value))


def _items(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [(str(n), v) for n, v in enumerate(value)]
    return list(value.items())


def _cmp_elements(left: list[tuple[str, Any]], right: list[tuple[str, Any]]) -> int:
    for (ka, va), (kb, vb) in zip(left, right, strict=False):
        ra, rb = type_rank(va), type_rank(vb)
        if ra != rb:
            return -1 if ra < rb else 1
        if ka != kb:
            # strcmp of UTF-8 names: code point order is UTF-8 byte order.
            return -1 if ka < kb else 1
        c = id_cmp(va, vb)
        if c:
            return c
    return (len(left) > len(right)) - (len(left) < len(right))


def _binary_key(value: Any) -> tuple[int, int, bytes]:
    if type(value).__name__ == "UUID":
        return (16, 4, value.bytes)
    data = bytes(value)
    return (len(data), int(getattr(value, "subtype", 0)), data)
