"""The ``filter`` step's match language: a small, pure subset of MongoDB query syntax.

``{field: value}`` (equality; a value in an array field matches too), field
operators ``$eq $ne $in $nin $exists $gt $gte $lt $lte $not``, and the logical
operators ``$and $or $nor`` at any document level. Comparison follows BSON
loosely: numbers (int, long, double, decimal) compare by value, a bool never
equals a number, and ``$gt``/``$lt`` between different kinds is simply false.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128

from stream_migrator.spec.paths import MISSING, get_path

FIELD_OPERATORS = ("$eq", "$exists", "$gt", "$gte", "$in", "$lt", "$lte", "$ne", "$nin", "$not")
LOGICAL_OPERATORS = ("$and", "$nor", "$or")


def problems(query: Any, where: str = "filter") -> list[str]:
    """Why ``query`` is not a valid match document (empty when it is)."""
    if not isinstance(query, dict):
        return [f"{where}: expected a mapping like {{status: paid}}, got {type(query).__name__}"]
    out: list[str] = []
    for key, cond in query.items():
        if key in LOGICAL_OPERATORS:
            if not isinstance(cond, list) or not cond:
                out.append(f"{where}: {key} takes a non-empty list of match documents")
                continue
            for i, sub in enumerate(cond):
                out.extend(problems(sub, f"{where}.{key}[{i}]"))
        elif str(key).startswith("$"):
            known = ", ".join(LOGICAL_OPERATORS)
            out.append(f"{where}: unknown operator {key!r} here; expected a field or {known}")
        elif _is_operator_doc(cond):
            out.extend(_field_problems(cond, f"{where}.{key}"))
    return out


def _field_problems(cond: dict[str, Any], where: str) -> list[str]:
    out: list[str] = []
    for op, arg in cond.items():
        if op not in FIELD_OPERATORS:
            out.append(
                f"{where}: unknown operator {op!r}; expected one of {', '.join(FIELD_OPERATORS)}"
            )
        elif op in ("$in", "$nin") and not isinstance(arg, list):
            out.append(f"{where}: {op} takes a list")
        elif op == "$exists" and not isinstance(arg, bool):
            out.append(f"{where}: $exists takes true or false")
        elif op == "$not":
            if not _is_operator_doc(arg):
                out.append(f"{where}: $not takes an operator document like {{$in: [a, b]}}")
            else:
                out.extend(_field_problems(arg, where))
    return out


def _is_operator_doc(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(str(k).startswith("$") for k in value)


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    """True when ``doc`` matches ``query`` (assumed valid: see :func:`problems`)."""
    for key, cond in query.items():
        if key == "$and":
            ok = all(matches(doc, sub) for sub in cond)
        elif key == "$or":
            ok = any(matches(doc, sub) for sub in cond)
        elif key == "$nor":
            ok = not any(matches(doc, sub) for sub in cond)
        elif _is_operator_doc(cond):
            ok = _field_matches(get_path(doc, key), cond)
        else:
            ok = _equals(get_path(doc, key), cond)
        if not ok:
            return False
    return True


def _field_matches(value: Any, cond: dict[str, Any]) -> bool:
    return all(_op(value, op, arg) for op, arg in cond.items())


def _op(value: Any, op: str, arg: Any) -> bool:  # noqa: PLR0911 - one branch per operator
    if op == "$eq":
        return _equals(value, arg)
    if op == "$ne":
        return not _equals(value, arg)
    if op == "$in":
        return any(_equals(value, a) for a in arg)
    if op == "$nin":
        return not any(_equals(value, a) for a in arg)
    if op == "$exists":
        return (value is not MISSING) == bool(arg)
    if op == "$not":
        return not _field_matches(value, arg)
    return _compare(value, op, arg)


def _equals(value: Any, arg: Any) -> bool:
    if value is MISSING:
        return arg is None
    if isinstance(value, list) and not isinstance(arg, list):
        return any(_same(v, arg) for v in value)
    return _same(value, arg)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(_norm(a) == _norm(b))


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, float | int) and not isinstance(value, bool):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal128):
        return "number"
    return type(value).__name__


def _compare(value: Any, op: str, arg: Any) -> bool:
    if value is MISSING or value is None or _kind(value) != _kind(arg):
        return False
    a, b = _norm(value), _norm(arg)
    try:
        if op == "$gt":
            return bool(a > b)
        if op == "$gte":
            return bool(a >= b)
        if op == "$lt":
            return bool(a < b)
        return bool(a <= b)
    except (TypeError, ArithmeticError):  # NaN, or kinds Python cannot order
        return False
