"""Validate BSON documents against Avro schemas (``schemas/<collection>.v<N>.avsc``).

Avro has no ObjectId, Decimal128 or timezone-aware date, so the schemas use this
mapping (each logical type annotates a plain Avro type, so any Avro tool reads
the files):

=================  ======================================================  ====================
BSON               in the .avsc                                            in :func:`to_avro`
=================  ======================================================  ====================
ObjectId           ``{"type": "string", "logicalType": "objectId"}``       24 hex digits
Decimal128         ``{"type": "string", "logicalType": "decimal128"}``     ``str(decimal)``
date               ``{"type": "long", "logicalType": "timestamp-millis"}``  aware datetime
int32 / int64      ``"int"`` / ``"long"`` (``"long"`` accepts any integer)  int
double             ``"double"`` (or ``"float"``)                          float
string, bool       ``"string"``, ``"boolean"``                            same
binary             ``"bytes"`` or a ``fixed``                             bytes
embedded document  a ``record`` (closed: unknown fields are errors), or    dict
                   a ``map`` (any keys)
array              ``array``                                               list
null               ``"null"``; an optional field is ``["null", T]``        None
=================  ======================================================  ====================

Validation is BSON-strict: a double field rejects an int (write ``["double",
"long"]`` for "any number"); a record field may be absent only when it has a
``default``. Errors name the path: ``address.zip: expected string, got int``,
``items[2].qty: missing (required by Item)``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import fastavro
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.errors import ConfigError, TransformError
from stream_migrator.spec.casts import shown, type_name

_INT32 = 2**31
_INT64 = 2**63
_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_Checker = Callable[[Any], bool]


@dataclass(frozen=True)
class AvroSchema:
    """A parsed .avsc; ``name`` (e.g. ``orders.v2``) is what messages call it."""

    name: str
    schema: Any
    path: Path | None = None
    named: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def violations(self, doc: Any, limit: int = 10) -> list[str]:
        """Up to ``limit`` problems of ``doc`` as ``path: what is wrong`` (empty when valid)."""
        if self.is_valid(doc):
            return []
        out: list[str] = []
        _check(doc, self.schema, "", self.named, out, limit)
        return out

    def is_valid(self, doc: Any) -> bool:
        """Whether ``doc`` matches the schema: the compiled check, without messages."""
        return self._compiled(doc)

    @cached_property
    def _compiled(self) -> _Checker:
        # Compiled once per schema. It only answers valid or not: the messages of an
        # invalid document come from the walk in _check (the slow path, quarantine only).
        return _compile(self.schema, self.named, {})

    def validate(self, doc: dict[str, Any]) -> None:
        """Raise TransformError naming the first bad field path (the document is quarantined)."""
        problems = self.violations(doc, limit=1)
        if problems:
            path = problems[0].split(": ", 1)[0]
            raise TransformError(
                f"does not match schema {self.name}: {problems[0]}", field=path, step="schema"
            )


def load_schema(path: Path, name: str | None = None) -> AvroSchema:
    """Read and parse an .avsc; a missing or invalid file is a ConfigError saying which."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"schema file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"schema file {path} is not readable JSON: {exc}") from None
    try:
        parsed: Any = fastavro.parse_schema(raw)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types for bad schemas
        raise ConfigError(f"schema file {path} is not a valid Avro schema: {exc}") from None
    label = name or path.name.removesuffix(".avsc")
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    return AvroSchema(label, parsed, path, dict(named))


# -- validation --------------------------------------------------------------


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        return named.get(schema, schema)
    if (
        isinstance(schema, dict)
        and schema.get("type") not in (*_PRIMITIVES, None)
        and isinstance(schema.get("type"), str)
    ):
        inner = schema["type"]
        if inner in named and len(schema) == 1:
            return named[inner]
    return schema


def _describe(schema: Any, named: dict[str, Any]) -> str:
    schema = _resolve(schema, named)
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


def _check(  # noqa: PLR0912 - one branch per Avro type
    value: Any, schema: Any, path: str, named: dict[str, Any], out: list[str], limit: int
) -> None:
    if len(out) >= limit:
        return
    where = path or "(document)"
    schema = _resolve(schema, named)
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
            _check(item, schema["values"], _join(path, str(key)), named, out, limit)
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
    for branch in branches:
        trial: list[str] = []
        _check(value, branch, path, named, trial, 1)
        if not trial:
            return
    # A document or array against a union with one branch of that shape: that branch's
    # own error (``items[0].qty: missing``) is more precise than "expected null or array".
    same_shape = [b for b in (_resolve(b, named) for b in branches) if _same_shape(value, b)]
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
        sub = _join(path, f["name"])
        if f["name"] in value:
            _check(value[f["name"]], f["type"], sub, named, out, limit)
        elif "default" not in f:
            out.append(f"{sub}: missing (required by {record})")
    for key in value:
        if key not in names and len(out) < limit:
            out.append(
                f"{_join(path, str(key))}: not in schema ({record} has {', '.join(names)}); "
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


def _compile(  # noqa: PLR0911 - one branch per Avro type
    schema: Any, named: dict[str, Any], done: dict[int, _Checker]
) -> _Checker:
    """The checker of ``schema``; ``done`` holds the records compiled so far, by ``id``.

    A recursive type refers to itself by name, which resolves to the same object
    of ``named`` each time: keyed by identity, its second visit finds the first.
    """
    schema = _resolve(schema, named)
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


def _instance_of(kinds: tuple[type, ...]) -> _Checker:
    return lambda value: isinstance(value, kinds)


def _compile_union(
    branches: list[Any], named: dict[str, Any], done: dict[int, _Checker]
) -> _Checker:
    # The branches that are a plain isinstance test (null, string, objectId, ...) merge
    # into one isinstance call: ["null", "string"] costs what "string" does.
    classes: list[type] = []
    others: list[_Checker] = []
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
    schema = _resolve(schema, named)
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
    schema: dict[str, Any], named: dict[str, Any], done: dict[int, _Checker]
) -> _Checker:
    if id(schema) in done:
        return done[id(schema)]
    fields: dict[str, _Checker] = {}
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

_PRIMITIVE_CHECKS: dict[str, _Checker] = {
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


# -- conversion for Avro tools -------------------------------------------------


def to_avro(value: Any, schema: AvroSchema) -> Any:
    """A copy of a (valid) document that fastavro can write, following the mapping above."""
    return _convert(value, schema.schema, schema.named)


def _convert(value: Any, schema: Any, named: dict[str, Any]) -> Any:  # noqa: PLR0911
    schema = _resolve(schema, named)
    if isinstance(schema, list):
        for branch in schema:
            trial: list[str] = []
            _check(value, branch, "", named, trial, 1)
            if not trial:
                return _convert(value, branch, named)
        return value
    if isinstance(schema, str):
        return int(value) if isinstance(value, Int64) else value
    logical = schema.get("logicalType")
    if logical in ("objectId", "decimal128"):
        return str(value)
    kind = schema.get("type")
    if kind == "record":
        return {
            f["name"]: _convert(value[f["name"]], f["type"], named)
            for f in schema["fields"]
            if f["name"] in value
        }
    if kind == "array":
        return [_convert(v, schema["items"], named) for v in value]
    if kind == "map":
        return {k: _convert(v, schema["values"], named) for k, v in value.items()}
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _convert(value, kind, named)
    return value


# -- generation (for `spec check` without a source) ------------------------------


def generate(
    schema: AvroSchema, rng: random.Random, examples: dict[str, list[Any]] | None = None
) -> Any:
    """A random document valid against ``schema``.

    ``examples`` maps a path (``address``, ``items[].sku``) to values seen in the
    spec's example documents; a field with examples takes one of them, so string
    fields with a format (an address the spec splits) get realistic values.
    """
    return _gen(schema.schema, "", schema.named, rng, examples or {}, 0)


def _gen(  # noqa: PLR0911, PLR0912 - one branch per Avro type
    schema: Any,
    path: str,
    named: dict[str, Any],
    rng: random.Random,
    examples: dict[str, list[Any]],
    depth: int,
) -> Any:
    schema = _resolve(schema, named)
    seen = examples.get(path) if path != "_id" else None
    # Strings often have a format the spec relies on (an address it splits): take them
    # from the examples; other kinds are random half of the time, for coverage.
    if seen and (schema == "string" or rng.random() < 0.5):
        candidate = rng.choice(seen)
        trial: list[str] = []
        _check(candidate, schema, path, named, trial, 1)
        if not trial:
            return candidate
    if isinstance(schema, list):
        non_null = [b for b in schema if b != "null"]
        if "null" in schema and (not non_null or rng.random() < 0.15):
            return None
        return _gen(rng.choice(non_null), path, named, rng, examples, depth)
    if isinstance(schema, str):
        return _gen_primitive(schema, rng)
    logical = schema.get("logicalType")
    if logical == "objectId":
        return ObjectId(bytes(rng.getrandbits(8) for _ in range(12)))
    if logical == "decimal128":
        return Decimal128(Decimal(rng.randint(-(10**8), 10**8)).scaleb(-rng.randint(0, 4)))
    if logical in ("timestamp-millis", "timestamp-micros", "date"):
        return _EPOCH + dt.timedelta(milliseconds=rng.randint(0, 4_102_444_800_000))
    kind = schema.get("type")
    if kind == "record":
        doc: dict[str, Any] = {}
        for f in schema["fields"]:
            if "default" in f and rng.random() < 0.25:
                continue
            doc[f["name"]] = _gen(
                f["type"], _join(path, f["name"]), named, rng, examples, depth + 1
            )
        return doc
    if kind == "array":
        count = 0 if depth > 6 else rng.randint(0, 3)
        return [
            _gen(schema["items"], f"{path}[]", named, rng, examples, depth + 1)
            for _ in range(count)
        ]
    if kind == "map":
        count = 0 if depth > 6 else rng.randint(0, 2)
        return {
            _word(rng): _gen(schema["values"], f"{path}.*", named, rng, examples, depth + 1)
            for _ in range(count)
        }
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "fixed":
        return bytes(rng.getrandbits(8) for _ in range(schema["size"]))
    return _gen(kind, path, named, rng, examples, depth)


def _gen_primitive(kind: str, rng: random.Random) -> Any:  # noqa: PLR0911
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-1000, 100_000)
    if kind == "long":
        return rng.choice([rng.randint(0, 100_000), rng.randint(-(2**53), 2**53)])
    if kind in ("float", "double"):
        return rng.choice([round(rng.uniform(0, 1000), 2), rng.uniform(-1e6, 1e6)])
    if kind == "bytes":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 8)))
    return _word(rng)


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 10)))


def example_values(examples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Flatten example documents into ``path -> values`` for :func:`generate`."""
    out: dict[str, list[Any]] = {}

    def walk(value: Any, path: str) -> None:
        out.setdefault(path, []).append(value)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, _join(path, str(key)))
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}[]")

    for doc in examples:
        for key, item in doc.items():
            walk(item, key)
    return out
