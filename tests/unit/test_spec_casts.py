"""Decimal128 conversions of the cast step: the same values as bson's own, bit for bit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator.spec.casts import convert, decimal128, decimal_of

_exponents = st.integers(-6200, 6200)
_coefficients = st.integers(0, 10**34 - 1) | st.integers(0, 10**36)
_decimals = st.builds(
    lambda sign, coefficient, exponent: Decimal(f"{sign}{coefficient}E{exponent}"),
    st.sampled_from(["", "-"]),
    _coefficients,
    _exponents,
) | st.decimals(allow_nan=False, allow_infinity=False)


def _bson(number: Decimal) -> bytes | str:
    try:
        return Decimal128(number).bid
    except ArithmeticError as exc:
        return type(exc).__name__


def _ours(number: Decimal) -> bytes | str:
    try:
        return decimal128(number).bid
    except ArithmeticError as exc:
        return type(exc).__name__


@given(_decimals)
def test_decimal128_encodes_and_refuses_like_bson(number: Decimal) -> None:
    """Same bits for every value that fits; Inexact/Overflow where bson refuses to round."""
    assert _ours(number) == _bson(number)


@given(st.binary(min_size=16, max_size=16))
def test_decimal_of_decodes_every_bit_pattern_like_bson(bid: bytes) -> None:
    """Any 128 bits (NaN, infinity, non-canonical included) decode to bson's Decimal, same form."""
    value = Decimal128.from_bid(bid)
    try:
        expected: object = value.to_decimal()
    except ArithmeticError as exc:
        expected = type(exc)
    try:
        got: object = decimal_of(value)
    except ArithmeticError as exc:
        got = type(exc)
    assert str(got) == str(expected)


@given(_decimals)
def test_decimal_of_inverts_decimal128(number: Decimal) -> None:
    """decimal_of(decimal128(d)) keeps the digits and the exponent (19.990 stays 19.990)."""
    try:
        encoded = decimal128(number)
    except ArithmeticError:
        return
    assert str(decimal_of(encoded)) == str(encoded.to_decimal())


@pytest.mark.parametrize("text", ["-0", "-0.00", "0E-6176", "9" * 34, "1E+6111", "19.990"])
def test_decimal128_edge_values(text: str) -> None:
    """Signed zeros, the extreme exponents and 34 digits round-trip exactly."""
    value = decimal128(Decimal(text))
    assert value.bid == Decimal128(Decimal(text)).bid
    assert str(decimal_of(value)) == str(value.to_decimal())
    assert decimal_of(value) == Decimal(text)


@given(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 5e-324, 1e22]))
def test_double_to_decimal_is_the_decimal_of_its_repr(value: float) -> None:
    """A double casts to the Decimal128 of its shortest repr (19.99, -0.0, 1E+22), as before."""
    expected = Decimal128(Decimal(repr(value)))
    got = convert(value, "decimal")
    assert got.bid == expected.bid
    assert str(got) == str(expected)
