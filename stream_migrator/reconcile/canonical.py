"""The field-level diff and field paths of documents (what a reconcile report shows).

Whether two documents are the same at all is :mod:`stream_migrator.canonical`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson import Binary, Code, DBRef, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.bson_types import scalar_type
from stream_migrator.canonical import canonical
from stream_migrator.events import META_FIELD

_INDEX = re.compile(r"^\d+$")


def bson_type(value: Any) -> str:
    """The BSON type name a value is stored as (what a reader of the target sees)."""
    name = scalar_type(value)
    if name is not None:
        return name
    simple: list[tuple[type | tuple[type, ...], str]] = [
        (float, "double"),
        (str, "string"),
        (Decimal128, "decimal"),
        (ObjectId, "objectId"),
        (dt.datetime, "date"),
        (Mapping, "object"),
        ((list, tuple), "array"),
        ((bytes, Binary), "binData"),
        (Timestamp, "timestamp"),
        ((Regex, re.Pattern), "regex"),
        (Code, "javascript"),
        (DBRef, "dbPointer"),
        (MinKey, "minKey"),
        (MaxKey, "maxKey"),
    ]
    for kinds, name in simple:
        if isinstance(value, kinds):
            return name
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One difference between the expected (transformed source) and the actual target.

    ``reason``: ``missing_field`` (expected, absent in target), ``extra_field``
    (in target, not expected), ``type`` (same path, different BSON type) or
    ``value`` (same type, different value).
    """

    path: str
    reason: str
    expected: Any
    actual: Any

    def describe(self) -> str:
        if self.reason == "missing_field":
            return f"{self.path}: missing in target (expected {_show(self.expected)})"
        if self.reason == "extra_field":
            return f"{self.path}: not expected, target has {_show(self.actual)}"
        if self.reason == "type":
            return (
                f"{self.path}: type {bson_type(self.actual)} instead of "
                f"{bson_type(self.expected)} (expected {_show(self.expected)}, "
                f"got {_show(self.actual)})"
            )
        return f"{self.path}: expected {_show(self.expected)}, got {_show(self.actual)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "reason": self.reason,
            "expected": _show(self.expected),
            "actual": _show(self.actual),
            "expected_type": None if self.reason == "extra_field" else bson_type(self.expected),
            "actual_type": None if self.reason == "missing_field" else bson_type(self.actual),
        }


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff_docs(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[FieldDiff]:
    """Field-level differences of two documents (``_sm`` ignored), in path order."""
    return list(_diff(canonical(expected), canonical(actual), ""))


def _diff(exp: Any, act: Any, path: str) -> Iterator[FieldDiff]:
    if isinstance(exp, dict) and isinstance(act, dict):
        for key in sorted(exp.keys() | act.keys()):
            sub = f"{path}.{key}" if path else key
            if key not in act:
                yield FieldDiff(sub, "missing_field", exp[key], None)
            elif key not in exp:
                yield FieldDiff(sub, "extra_field", None, act[key])
            else:
                yield from _diff(exp[key], act[key], sub)
        return
    if isinstance(exp, list) and isinstance(act, list):
        for i in range(max(len(exp), len(act))):
            sub = f"{path}.{i}"
            if i >= len(act):
                yield FieldDiff(sub, "missing_field", exp[i], None)
            elif i >= len(exp):
                yield FieldDiff(sub, "extra_field", None, act[i])
            else:
                yield from _diff(exp[i], act[i], sub)
        return
    if bson_type(exp) != bson_type(act):
        yield FieldDiff(path, "type", exp, act)
    elif bson.encode({"v": exp}) != bson.encode({"v": act}):
        yield FieldDiff(path, "value", exp, act)


def generic_path(path: str) -> str:
    """``items.3.qty`` -> ``items.[].qty``: array positions folded for the top-fields table."""
    return ".".join("[]" if _INDEX.match(part) else part for part in path.split("."))


def leaf_paths(doc: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of populated (non-null) fields, sub-documents included, ``_sm`` skipped.

    Array elements are folded into ``[]`` so the set stays as small as the schema;
    each path comes once, in document order. The reconciler calls this for every
    target document, hence the plain loops and exact-type checks before ``isinstance``.
    """
    out: list[str] = []
    _leaf_paths(doc, f"{prefix}." if prefix else "", not prefix, out)
    return iter(out)


#: Types that are never containers: checked by identity before the slower ABC checks.
_SCALARS = frozenset(
    {str, int, float, bool, Int64, Decimal128, ObjectId, dt.datetime, bytes, Binary, Timestamp}
)


def _leaf_paths(doc: Mapping[str, Any], prefix: str, top: bool, out: list[str]) -> None:
    for key, value in doc.items():
        if value is None or (top and key == META_FIELD):
            continue
        path = prefix + key
        out.append(path)
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is dict or isinstance(value, Mapping):
            _leaf_paths(value, path + ".", False, out)
        elif kind is list or isinstance(value, list | tuple):
            # The items' paths, each once (a dict keeps the first-seen order).
            inner: list[str] = []
            items = path + ".[]."
            for item in value:
                if type(item) is dict or isinstance(item, Mapping):
                    _leaf_paths(item, items, False, inner)
            out.extend(dict.fromkeys(inner))


def schema_paths(schema: Any, named: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted field paths of an Avro record schema (arrays as ``[]``), in declaration order.

    Field coverage is reported for these, so a field no target document has shows as 0%.
    """
    out: list[str] = []
    _schema_paths(schema, named, prefix, out, set())
    return list(dict.fromkeys(out))


def _schema_paths(
    schema: Any, named: Mapping[str, Any], prefix: str, out: list[str], seen: set[str]
) -> None:
    if isinstance(schema, str):
        if schema in seen or schema not in named:
            return  # a primitive, or a recursive reference already expanded
        seen = seen | {schema}
        schema = named[schema]
    if isinstance(schema, list):  # a union, e.g. ["null", {...}]
        for branch in schema:
            _schema_paths(branch, named, prefix, out, seen)
        return
    if not isinstance(schema, Mapping):
        return
    kind = schema.get("type")
    if kind == "record":
        if "name" in schema:
            seen = seen | {str(schema["name"])}
        for f in schema.get("fields", []):
            path = f"{prefix}.{f['name']}" if prefix else str(f["name"])
            out.append(path)
            _schema_paths(f["type"], named, path, out, seen)
    elif kind == "array":
        _schema_paths(schema.get("items"), named, f"{prefix}.[]", out, seen)
    elif isinstance(kind, Mapping | list | str) and kind not in _PRIMITIVES:
        _schema_paths(kind, named, prefix, out, seen)


_PRIMITIVES = {
    "null",
    "boolean",
    "int",
    "long",
    "float",
    "double",
    "bytes",
    "string",
    "enum",
    "fixed",
    "map",
    "record",
    "array",
}
