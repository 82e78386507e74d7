"""Declarative migration steps. Each step rewrites a document in place and knows its inverse."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from bson.decimal128 import Decimal128

from stream_migrator.errors import TransformError
from stream_migrator.spec.paths import MISSING, get_path, pop_path, set_path


class Step(Protocol):
    """One reversible rewrite of a document."""

    def apply(self, doc: dict[str, Any]) -> None: ...

    def invert(self, doc: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Rename:
    """Move ``src`` to ``dst`` (dotted paths, so this also nests and un-nests)."""

    src: str
    dst: str

    def apply(self, doc: dict[str, Any]) -> None:
        _move(doc, self.src, self.dst)

    def invert(self, doc: dict[str, Any]) -> None:
        _move(doc, self.dst, self.src)


def _move(doc: dict[str, Any], src: str, dst: str) -> None:
    value = pop_path(doc, src)
    if value is not MISSING:
        set_path(doc, dst, value)


@dataclass(frozen=True)
class SplitString:
    """Split a string field into a sub-document by a regular expression with named groups.

    ``joiner`` rebuilds the string for the inverse, e.g. ``"{street}, {city}, {zip}"``.
    A null or missing value stays as it is; a string that does not match is an error.
    """

    field: str
    pattern: str
    joiner: str

    def apply(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if value is MISSING or value is None:
            return
        if not isinstance(value, str):
            raise TransformError(
                f"{self.field}: expected a string, got {type(value).__name__}", field=self.field
            )
        match = re.fullmatch(self.pattern, value.strip())
        if match is None:
            raise TransformError(
                f"{self.field}: {value!r} does not match {self.pattern!r}", field=self.field
            )
        set_path(doc, self.field, {k: v.strip() for k, v in match.groupdict().items()})

    def invert(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if isinstance(value, dict):
            set_path(doc, self.field, self.joiner.format(**value))


@dataclass(frozen=True)
class CastDecimal:
    """Cast a number or numeric string to Decimal128; the inverse gives back a double."""

    field: str

    def apply(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if value is MISSING or value is None or isinstance(value, Decimal128):
            return
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TransformError(
                f"{self.field}: cannot cast {type(value).__name__} to decimal", field=self.field
            )
        try:
            # repr of a float is its shortest round-tripping form: 19.99, not 19.989999...
            number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise TransformError(
                f"{self.field}: {value!r} is not a number", field=self.field
            ) from None
        if not number.is_finite():
            raise TransformError(f"{self.field}: {value!r} is not finite", field=self.field)
        set_path(doc, self.field, Decimal128(number))

    def invert(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if isinstance(value, Decimal128):
            set_path(doc, self.field, float(value.to_decimal()))


@dataclass(frozen=True)
class Default:
    """Set ``field`` to ``value`` when missing or null.

    The inverse removes the field when it still holds the default; a source that
    stored the default value explicitly therefore loses that one field on rollback.
    """

    field: str
    value: Any

    def apply(self, doc: dict[str, Any]) -> None:
        if get_path(doc, self.field) in (MISSING, None):
            set_path(doc, self.field, self.value)

    def invert(self, doc: dict[str, Any]) -> None:
        if get_path(doc, self.field) == self.value:
            pop_path(doc, self.field)
