"""Whether a value matches an Avro schema (under the BSON mapping in :mod:`.avro`).

Two checks that must agree: the compiled check (one closure per schema node,
built once per schema) answers valid or not on the hot path; the walk
(:func:`find_violations`) names what is wrong, and runs only for a document the
compiled check refused (tests/unit/test_spec_avro_compiled.py compares the two).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.spec.casts import shown, type_name

_INT32 = 2**31
_INT64 = 2**63
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
Checker = Callable[[Any], bool]


def child_path(path: str, name: str) -> str:
    """The path of field ``name`` below ``path`` (``address`` + ``zip`` -> ``address.zip``)."""
    return f"{path}.{name}" if path else name


def resolve(schema: Any, named: dict[str, Any]) -> Any:
    """``schema`` with a reference to a named type replaced by that type."""
    if isinstance(schema, str) and schema not in PRIMITIVES:
        return named.get(schema, schema)
    if (
        isinstance(schema, dict)
        and schema.get("type") not in (*PRIMITIVES, None)
        and isinstance(schema.get("type"), str)
    ):
        inner = schema["type"]
        if inner in named and len(schema) == 1:
            return named[inner]
    return schema


def _describe(schema: Any, named: dict[str, Any]) -> str:
    schema = resolve(schema, named)
    if isinstance(schema, list):
        return " or ".join(_describe(s, named) for s in schema)
    if isinstance(schema, str):
        return schema
    logical = schema.get("logicalType")
    if logical in ("objectId", "decimal128"):
        return str(logical)
    if logical in ("timestamp-millis", "timestamp-micros", "date"):
        return "date"
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {str(schema.get('name', '')).rsplit('.', 1)[-1]}"
    return str(kind if isinstance(kind, str) else _describe(kind, named))


def find_violations(value: Any, schema: Any, named: dict[str, Any], limit: int) -> list[str]:
    """Up to ``limit`` problems of ``value`` as ``path: what is wrong`` (empty when valid)."""
    out: list[str] = []
    _check(value, schema, "", named, out, limit)
    return out


def conforms(value: Any, schema: Any, named: dict[str, Any]) -> bool:
    """Whether the walk finds nothing wrong with ``value`` (the slow path's answer)."""
    return not find_violations(value, schema, named, 1)


# -- the walk (messages) -------------------------------------------------------------


def _check(  # noqa: PLR0912 - one branch per Avro type
    value: Any, schema: Any, path: str, named: dict[str, Any], out: list[str], limit: int
) -> None:
    if len(out) >= limit:
        return
    where = path or "(document)"
    schema = resolve(schema, named)
    if isinstance(schema, list):
        _check_union(value, schema, path, named, out, limit)
        return
    if isinstance(schema, str):
        if not _primitive_ok(value, schema):
            out.append(f"{where}: expected {schema}, got {type_name(value)}")
        return
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None and _logical_ok(value, logical) is not None:
        if not _logical_ok(value, logical):
            out.append(f"{where}: expected {_describe(schema, named)}, got {type_name(value)}")
        return
    if kind == "record":
        _check_record(value, schema, path, named, out, limit)
    elif kind == "array":
        if not isinstance(value, list):
            out.append(f"{where}: expected array, got {type_name(value)}")
            return
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{i}]", named, out, limit)
    elif kind == "map":
        if not isinstance(value, dict):
            out.append(f"{where}: expected a document (map), got {type_name(value)}")
            return
        for key, item in value.items():
            _check(item, schema["values"], child_path(path, str(key)), named, out, limit)
    elif kind == "enum":
        if not isinstance(value, str) or value not in schema["symbols"]:
            value_text = shown(value) if isinstance(value, str) else type_name(value)
            out.append(f"{where}: expected one of {', '.join(schema['symbols'])}, got {value_text}")
    elif kind == "fixed":
        if not isinstance(value, bytes) or len(value) != schema["size"]:
            out.append(f"{where}: expected {schema['size']} bytes, got {type_name(value)}")
    else:
        _check(value, kind, path, named, out, limit)


def _check_union(
    value: Any, branches: list[Any], path: str, named: dict[str, Any], out: list[str], limit: int
) -> None:
    if any(conforms(value, branch, named) for branch in branches):
        return
    # A document or array against a union with one branch of that shape: that branch's
    # own error (``items[0].qty: missing``) is more precise than "expected null or array".
    same_shape = [b for b in (resolve(b, named) for b in branches) if _same_shape(value, b)]
    if len(same_shape) == 1:
        _check(value, same_shape[0], path, named, out, limit)
        return
    expected = " or ".join(_describe(b, named) for b in branches)
    out.append(f"{path or '(document)'}: expected {expected}, got {type_name(value)}")


def _same_shape(value: Any, schema: Any) -> bool:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(value, dict):
        return kind in ("record", "map")
    return isinstance(value, list) and kind == "array"


def _check_record(
    value: Any, schema: dict[str, Any], path: str, named: dict[str, Any], out: list[str], limit: int
) -> None:
    record = str(schema.get("name", "record")).rsplit(".", 1)[-1]
    if not isinstance(value, dict):
        out.append(
            f"{path or '(document)'}: expected a document ({record}), got {type_name(value)}"
        )
        return
    fields = schema["fields"]
    names = [f["name"] for f in fields]
    for f in fields:
        sub = child_path(path, f["name"])
        if f["name"] in value:
            _check(value[f["name"]], f["type"], sub, named, out, limit)
        elif "default" not in f:
            out.append(f"{sub}: missing (required by {record})")
    for key in value:
        if key not in names and len(out) < limit:
            out.append(
                f"{child_path(path, str(key))}: not in schema ({record} has {', '.join(names)}); "
                "add it to the schema or drop it in the spec"
            )


def _primitive_ok(value: Any, kind: str) -> bool:
    return _PRIMITIVE_CHECKS.get(kind, _never)(value)


def _logical_ok(value: Any, logical: str) -> bool | None:
    """Whether ``value`` is of this logical type; None for a logical type we do not map."""
    cls = _LOGICAL_CLASSES.get(logical)
    return None if cls is None else isinstance(value, cls)


# -- the compiled check ------------------------------------------------------------
#
# One closure per schema node, built once: union branches, named types and the
# primitive tests are resolved here instead of per value. It must accept exactly
# what _check accepts (tests/unit/test_spec_avro_compiled.py compares the two);
# where it is unsure, it says invalid, and _check then has the last word.


def compile_check(schema: Any, named: dict[str, Any]) -> Checker:
    """The compiled check of ``schema``: it only answers valid or not."""
    return _compile(schema, named, {})


def _compile(  # noqa: PLR0911 - one branch per Avro type
    schema: Any, named: dict[str, Any], done: dict[int, Checker]
) -> Checker:
    """The checker of ``schema``; ``done`` holds the records compiled so far, by ``id``.

    A recursive type refers to itself by name, which resolves to the same object
    of ``named`` each time: keyed by identity, its second visit finds the first.
    """
    schema = resolve(schema, named)
    kinds = _classes_of(schema, named)
    if kinds is not None:
        return _instance_of(kinds)
    if isinstance(schema, list):
        return _compile_union(schema, named, done)
    if isinstance(schema, str):
        return _PRIMITIVE_CHECKS.get(schema, _never)  # int, long, or an unknown name
    if not isinstance(schema, dict):
        return _never
    kind = schema.get("type")
    if kind == "record":
        return _compile_record(schema, named, done)
    if kind == "array":
        item = _compile(schema.get("items"), named, done)
        return lambda value: isinstance(value, list) and all(map(item, value))
    if kind == "map":
        each = _compile(schema.get("values"), named, done)
        return lambda value: isinstance(value, dict) and all(map(each, value.values()))
    if kind == "enum":
        symbols = frozenset(schema.get("symbols", ()))
        return lambda value: isinstance(value, str) and value in symbols
    if kind == "fixed":
        size = schema.get("size")
        return lambda value: isinstance(value, bytes) and len(value) == size
    if kind is None:
        return _never
    return _compile(kind, named, done)


def _never(_value: Any) -> bool:
    return False


def _instance_of(kinds: tuple[type, ...]) -> Checker:
    return lambda value: isinstance(value, kinds)


def _compile_union(branches: list[Any], named: dict[str, Any], done: dict[int, Checker]) -> Checker:
    # The branches that are a plain isinstance test (null, string, objectId, ...) merge
    # into one isinstance call: ["null", "string"] costs what "string" does.
    classes: list[type] = []
    others: list[Checker] = []
    for branch in branches:
        kinds = _classes_of(branch, named)
        if kinds is None:
            others.append(_compile(branch, named, done))
        else:
            classes.extend(kinds)
    merged = tuple(classes)
    if not others:
        return _instance_of(merged)
    rest = tuple(others)
    if len(rest) == 1:
        (other,) = rest
        return lambda value: isinstance(value, merged) or other(value)
    return lambda value: isinstance(value, merged) or any(check(value) for check in rest)


def _classes_of(schema: Any, named: dict[str, Any]) -> tuple[type, ...] | None:
    """The classes a value of ``schema`` must be an instance of, when that is all its test is."""
    schema = resolve(schema, named)
    if isinstance(schema, str):
        return _PRIMITIVE_CLASSES.get(schema)
    if not isinstance(schema, dict):
        return None
    logical = _LOGICAL_CLASSES.get(schema.get("logicalType"))
    if logical is not None:
        return (logical,)
    kind = schema.get("type")
    return _PRIMITIVE_CLASSES.get(kind) if isinstance(kind, str) else None


def _compile_record(
    schema: dict[str, Any], named: dict[str, Any], done: dict[int, Checker]
) -> Checker:
    if id(schema) in done:
        return done[id(schema)]
    fields: dict[str, Checker] = {}
    required: set[str] = set()

    def check(value: Any) -> bool:
        if not isinstance(value, dict) or not required <= value.keys():
            return False
        for key, item in value.items():
            sub = fields.get(key)
            if sub is None or not sub(item):
                return False
        return True

    done[id(schema)] = check  # before the fields, which may refer to this record
    for f in schema.get("fields", ()):
        fields[f["name"]] = _compile(f["type"], named, done)
        if "default" not in f:
            required.add(f["name"])
    return check


def _is_int(value: Any) -> bool:
    # int32, as type_name says "int": not a bool, not an Int64 (a long even when small)
    return (
        isinstance(value, int)
        and not isinstance(value, (bool, Int64))
        and -_INT32 <= value < _INT32
    )


def _is_long(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64


#: The primitives whose whole test is an isinstance (bool is an int, so not int or long).
_PRIMITIVE_CLASSES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "float": (float,),
    "double": (float,),
    "bytes": (bytes,),
    "string": (str,),
}

_PRIMITIVE_CHECKS: dict[str, Checker] = {
    **{name: _instance_of(kinds) for name, kinds in _PRIMITIVE_CLASSES.items()},
    "int": _is_int,
    "long": _is_long,
}

#: The logical types of the mapping (the module docstring), by the Python class they take.
_LOGICAL_CLASSES: dict[Any, type] = {
    "objectId": ObjectId,
    "decimal128": Decimal128,
    "timestamp-millis": dt.datetime,
    "timestamp-micros": dt.datetime,
    "date": dt.datetime,
}
