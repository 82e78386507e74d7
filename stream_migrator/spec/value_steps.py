"""Steps that change a field's value: default, cast and drop."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Any, ClassVar

from bson import ObjectId
from bson.decimal128 import Decimal128

from stream_migrator.spec import casts
from stream_migrator.spec.paths import MISSING, get_path, pop_path, set_path
from stream_migrator.spec.steps import BaseStep, OnError, OnErrorStep, reject, step_error

#: Values that cannot be changed in place, so a step may share them between documents.
_IMMUTABLE = (str, int, float, bool, type(None), bytes, Decimal128, ObjectId, dt.datetime)


def _private(value: Any) -> Any:
    """``value`` itself when it cannot be changed in place, else a deep copy."""
    return value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)


@dataclass(frozen=True)
class Default(BaseStep):
    """Set ``field`` to ``value`` when missing or null.

    The inverse removes the field when it still holds the default; a source that
    stored the default value (or null) explicitly therefore loses that one field on rollback.
    """

    kind: ClassVar[str] = "default"
    field: str
    value: Any

    def apply(self, doc: dict[str, Any]) -> None:
        current = get_path(doc, self.field)
        if current is MISSING or current is None:
            set_path(doc, self.field, _private(self.value))

    def invert(self, doc: dict[str, Any]) -> None:
        if get_path(doc, self.field) == self.value:
            pop_path(doc, self.field)

    def describe(self) -> str:
        return f"default {self.field} = {self.value!r}"

    def inverse_note(self) -> str:
        return f"exact when {self.field} is absent, or neither null nor {self.value!r}"


@dataclass(frozen=True)
class Cast(OnErrorStep):
    """Cast ``field`` to a BSON type; ``source`` (YAML ``from``) is what the inverse restores."""

    kind: ClassVar[str] = "cast"
    field: str
    to: str
    source: str | None = None
    on_error: OnError = "quarantine"
    format: str | None = None

    def apply(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if value is MISSING or value is None or casts.is_type(value, self.to):
            return
        try:
            set_path(doc, self.field, casts.convert(value, self.to, self.format))
        except casts.CastFailure as exc:
            reject(doc, self.field, f"cannot cast to {self.to}: {exc}", self.on_error)

    def invert(self, doc: dict[str, Any]) -> None:
        if self.source is None:
            return
        value = get_path(doc, self.field)
        if value is MISSING or value is None or not casts.is_type(value, self.to):
            return  # a value kept by on_error: keep is still of its source type
        try:
            set_path(doc, self.field, casts.convert(value, self.source, self.format))
        except casts.CastFailure as exc:
            raise step_error(self.field, f"cannot cast back to {self.source}: {exc}") from None

    @property
    def reversible(self) -> bool:
        return (
            self.source is not None
            and (self.source, self.to) not in casts.LOSSY
            and self.on_error != "null"
            and (self.format is None or "%f" in self.format)
        )

    def describe(self) -> str:
        return f"cast {self.field} {self.source or 'any'} -> {self.to} (on_error: {self.on_error})"

    def inverse_note(self) -> str:
        if self.source is None:
            return "no `from:` type, so the inverse cannot know what to restore"
        if (self.source, self.to) in casts.LOSSY:
            return f"{self.source} -> {self.to} loses precision or form"
        if self.on_error == "null":
            return "values that fail the cast become null: lost on rollback"
        if self.format is not None and "%f" not in self.format:
            return f"format {self.format!r} drops the sub-second part"
        if self.source == "string":
            return "exact for strings in canonical form (as a cast to string writes them)"
        return f"exact for {self.source} values"


@dataclass(frozen=True)
class Drop(BaseStep):
    """Remove ``field``. Reversible only with ``restore``: the value the inverse puts back."""

    kind: ClassVar[str] = "drop"
    field: str
    restore: Any = MISSING

    def apply(self, doc: dict[str, Any]) -> None:
        pop_path(doc, self.field)

    def invert(self, doc: dict[str, Any]) -> None:
        if self.restore is not MISSING and get_path(doc, self.field) is MISSING:
            set_path(doc, self.field, _private(self.restore))

    @property
    def reversible(self) -> bool:
        return self.restore is not MISSING

    def describe(self) -> str:
        return f"drop {self.field}"

    def inverse_note(self) -> str:
        if self.restore is MISSING:
            return "the dropped value is not stored; give `restore:` if it is a constant"
        return f"exact when every source document held {self.field} = {self.restore!r}"
