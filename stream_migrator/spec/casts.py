"""BSON value casts for the ``cast`` step, and the BSON type names used in messages.

Every conversion is pure and exact or refuses: a cast never rounds silently
(2.5 to ``int`` fails; a long int that a double cannot hold exactly fails).
The canonical string forms (what a cast *to* string produces, and so what the
inverse of a cast *from* string gives back) are: ``str(int)``, ``repr(float)``,
``str(Decimal)``, ISO-8601 UTC with milliseconds (``2024-01-15T10:00:00.000Z``),
24 lowercase hex digits for ObjectId, ``true``/``false``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
from decimal import Decimal, Inexact, InvalidOperation, Overflow
from typing import Any

from bson import ObjectId
from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64

from stream_migrator.bson_types import scalar_type
from stream_migrator.redact import MAX_VALUE_CHARS, document_values_shown

CAST_TYPES = ("bool", "date", "decimal", "double", "int", "long", "objectId", "string")

#: Which source types each target type accepts (``from`` is checked against this at load).
SOURCES: dict[str, frozenset[str]] = {
    "string": frozenset(CAST_TYPES),
    "int": frozenset({"int", "long", "double", "decimal", "string", "bool", "date"}),
    "long": frozenset({"int", "long", "double", "decimal", "string", "bool", "date"}),
    "double": frozenset({"int", "long", "double", "decimal", "string"}),
    "decimal": frozenset({"int", "long", "double", "decimal", "string"}),
    "date": frozenset({"date", "string", "int", "long"}),
    "objectId": frozenset({"objectId", "string"}),
    "bool": frozenset({"bool", "int", "long", "string"}),
}

#: (from, to) pairs whose inverse cannot give back every source value.
LOSSY: frozenset[tuple[str, str]] = frozenset(
    {("decimal", "double"), ("decimal", "int"), ("decimal", "long")}
)

_INT32 = 2**31
_INT64 = 2**63
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INTEGER = re.compile(r"[+-]?[0-9]+")


class CastFailure(ValueError):  # noqa: N818 - reads as "the cast failed"
    """A value cannot be cast; the message says why (without the field name)."""


def shown(value: Any) -> str:
    """A document value as error messages show it (quarantine reasons, logs).

    Its repr, cut to ``MAX_VALUE_CHARS``; only its BSON type (``<string>``) when
    ``SM_LOG_DOCUMENT_VALUES=false``, so no document content reaches a message.
    """
    if not document_values_shown():
        return f"<{type_name(value)}>"
    text = repr(value)
    if len(text) <= MAX_VALUE_CHARS:
        return text
    return f"{text[:MAX_VALUE_CHARS]}... ({len(text)} characters)"


def type_name(value: Any) -> str:
    """The BSON type name of a Python value, as messages and ``from:`` use it."""
    name = scalar_type(value) or _TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind):  # a subclass
            return name
    return type(value).__name__


_TYPE_NAMES: dict[type, str] = {
    float: "double",
    Decimal128: "decimal",
    str: "string",
    dt.datetime: "date",
    ObjectId: "objectId",
    dict: "document",
    list: "array",
    bytes: "binData",
}


def is_type(value: Any, to: str) -> bool:
    """True when ``value`` already is of cast type ``to`` (int and long both count as integers)."""
    name = type_name(value)
    if to in ("int", "long"):
        return name in ("int", "long") and (to == "long") == isinstance(value, Int64)
    return name == to


def _utc(value: dt.datetime) -> dt.datetime:
    """A naive datetime is UTC (that is what BSON stores); an aware one is converted."""
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def iso_millis(value: dt.datetime) -> str:
    """The canonical string of a date: ISO-8601 UTC with milliseconds and ``Z``."""
    utc = _utc(value)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def convert(value: Any, to: str, fmt: str | None = None) -> Any:
    """Cast ``value`` to BSON type ``to``; raises :class:`CastFailure` with the reason."""
    source = type_name(value)
    if to not in SOURCES:
        raise CastFailure(f"unknown type {to!r}")
    if source not in SOURCES[to]:
        raise CastFailure(f"cannot cast {source} to {to}")
    return _CONVERTERS[to](value, source, fmt)


def _to_string(value: Any, source: str, fmt: str | None) -> str:
    if source == "bool":
        return "true" if value else "false"
    if source == "double":
        return repr(value)
    if source == "decimal":
        return str(decimal_of(value))
    if source == "date":
        return _utc(value).strftime(fmt) if fmt else iso_millis(value)
    return str(value)


def _to_integer(value: Any, source: str, _fmt: str | None) -> int:
    number: int
    if source == "bool" or source in ("int", "long"):
        number = int(value)
    elif source == "double":
        if not math.isfinite(value) or not value.is_integer():
            raise CastFailure(f"{shown(value)} is not a whole number")
        number = int(value)
    elif source == "decimal":
        dec = decimal_of(value)
        if not dec.is_finite() or dec != dec.to_integral_value():
            raise CastFailure(f"{dec} is not a whole number")
        number = int(dec)
    elif source == "date":
        number = (_utc(value) - _EPOCH) // dt.timedelta(milliseconds=1)
    else:
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise CastFailure(f"{shown(value)} is not an integer")
        number = int(text)
    if not -_INT64 <= number < _INT64:
        raise CastFailure(f"{number} does not fit in 64 bits")
    return number


def _to_int(value: Any, source: str, fmt: str | None) -> int:
    number = _to_integer(value, source, fmt)
    if not -_INT32 <= number < _INT32:
        raise CastFailure(f"{number} does not fit in 32 bits; cast to long instead")
    return number


def _to_long(value: Any, source: str, fmt: str | None) -> Int64:
    return Int64(_to_integer(value, source, fmt))


def _to_double(value: Any, source: str, _fmt: str | None) -> float:
    if source == "double":
        return float(value)
    if source in ("int", "long"):
        number = float(value)
        if number != value:
            raise CastFailure(f"{value} cannot be held exactly by a double")
        return number
    if source == "decimal":
        number = float(decimal_of(value))
    else:
        try:
            number = float(value.strip())
        except ValueError:
            raise CastFailure(f"{shown(value)} is not a number") from None
    if not math.isfinite(number):
        raise CastFailure(f"{shown(value)} is not finite")
    return number


def _to_decimal(value: Any, source: str, _fmt: str | None) -> Decimal128:
    if source == "decimal":
        return value  # type: ignore[no-any-return]  # already a Decimal128
    if type(value) is float and math.isfinite(value):  # not a subclass: its repr may differ
        return _double_to_decimal128(value)
    try:
        number = Decimal(repr(value) if source == "double" else str(value).strip())
    except InvalidOperation:
        raise CastFailure(f"{shown(value)} is not a number") from None
    if not number.is_finite():
        raise CastFailure(f"{shown(value)} is not finite")
    try:
        return decimal128(number)
    except (ArithmeticError, ValueError):
        raise CastFailure(f"{shown(value)} does not fit in a Decimal128") from None


# Decimal128 <-> Decimal. bson's own conversions loop over the bits in Python (about
# 5 us a value); these do the same arithmetic on whole integers, with bson's context
# (precision, exponents, clamp) and bson's traps, so they give the same value and
# refuse (Inexact, Overflow) the same inputs instead of rounding them.
_DEC128_CONTEXT = create_decimal128_context()
_DEC128_CONTEXT.traps.update(dict.fromkeys((Inexact, Overflow, InvalidOperation), True))
_EXPONENT_BIAS = 6176
_MAX_EXPONENT = 6111
_LOW_64 = 2**64 - 1
_COEFFICIENT_HIGH = 2**49 - 1
_MAX_COEFFICIENT = 10**34 - 1
_PAIR = struct.Struct("<QQ")


def decimal128(number: Decimal) -> Decimal128:
    """``Decimal128(number)``: exact or raises (the Decimal128 context traps Inexact)."""
    exact = _DEC128_CONTEXT.create_decimal(number)
    if not exact.is_finite():
        return Decimal128(exact)
    sign, _, exponent = exact.as_tuple()
    assert isinstance(exponent, int)  # finite
    coefficient = int(exact.copy_abs().scaleb(-exponent, _DEC128_CONTEXT))
    return _from_parts(sign, coefficient, exponent)


def _double_to_decimal128(value: float) -> Decimal128:
    """``decimal128(Decimal(repr(value)))`` for a finite float, read off its repr.

    repr is the float's shortest round-tripping form (19.99, not 19.989999...),
    at most 17 digits and an exponent within +-400: it always fits exactly.
    """
    text = repr(value)
    mantissa, _, power = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    coefficient = abs(int(whole + fraction))
    return _from_parts(text[0] == "-", coefficient, int(power or 0) - len(fraction))


def _from_parts(negative: int, coefficient: int, exponent: int) -> Decimal128:
    # A coefficient of at most 34 digits (< 2**113) always takes the common encoding.
    high = coefficient >> 64 | (exponent + _EXPONENT_BIAS) << 49 | negative << 63
    return Decimal128.from_bid(_PAIR.pack(coefficient & _LOW_64, high))


def decimal_of(value: Decimal128) -> Decimal:
    """``value.to_decimal()``; the rare encodings (NaN, infinity, huge) are left to bson."""
    low, high = _PAIR.unpack(value.bid)
    exponent = (high >> 49 & 0x3FFF) - _EXPONENT_BIAS
    coefficient = (high & _COEFFICIENT_HIGH) << 64 | low
    if high >> 61 & 3 == 3 or exponent > _MAX_EXPONENT or coefficient > _MAX_COEFFICIENT:
        return value.to_decimal()
    return Decimal(f"{'-' if high >> 63 else ''}{coefficient}E{exponent}")


def _to_date(value: Any, source: str, fmt: str | None) -> dt.datetime:
    if source == "date":
        result: dt.datetime = value
    elif source in ("int", "long"):
        try:
            result = _EPOCH + dt.timedelta(milliseconds=int(value))
        except OverflowError:
            raise CastFailure(f"{value} milliseconds is out of the date range") from None
    else:
        try:
            text = value.strip()
            result = dt.datetime.strptime(text, fmt) if fmt else dt.datetime.fromisoformat(text)
        except ValueError:
            expected = f"format {fmt!r}" if fmt else "ISO-8601"
            raise CastFailure(f"{shown(value)} is not a date in {expected}") from None
    # BSON dates hold milliseconds; anything finer would not survive the write.
    result = _utc(result)
    return result.replace(microsecond=result.microsecond // 1000 * 1000)


def _to_object_id(value: Any, source: str, _fmt: str | None) -> ObjectId:
    if source == "objectId":
        return value  # type: ignore[no-any-return]  # already an ObjectId
    text = value.strip()
    if not ObjectId.is_valid(text):
        raise CastFailure(f"{shown(value)} is not 24 hex digits")
    return ObjectId(text)


def _to_bool(value: Any, source: str, _fmt: str | None) -> bool:
    if source == "bool":
        return bool(value)
    if source in ("int", "long"):
        if value not in (0, 1):
            raise CastFailure(f"{value} is neither 0 nor 1")
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise CastFailure(f"{shown(value)} is neither 'true' nor 'false'")
    return text == "true"


_CONVERTERS = {
    "string": _to_string,
    "int": _to_int,
    "long": _to_long,
    "double": _to_double,
    "decimal": _to_decimal,
    "date": _to_date,
    "objectId": _to_object_id,
    "bool": _to_bool,
}
