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
``items[2].qty: missing (required by Item)``. The checks are in
:mod:`~stream_migrator.spec.avro_validate`, random valid documents in
:mod:`~stream_migrator.spec.avro_generate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import fastavro
from bson.int64 import Int64

from stream_migrator.errors import ConfigError, TransformError
from stream_migrator.spec.avro_validate import (
    PRIMITIVES,
    Checker,
    compile_check,
    conforms,
    find_violations,
    resolve,
)


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
        return find_violations(doc, self.schema, self.named, limit)

    def is_valid(self, doc: Any) -> bool:
        """Whether ``doc`` matches the schema: the compiled check, without messages."""
        return self._compiled(doc)

    @cached_property
    def _compiled(self) -> Checker:
        # Compiled once per schema. It only answers valid or not: the messages of an
        # invalid document come from the walk (the slow path, quarantine only).
        return compile_check(self.schema, self.named)

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


# -- conversion for Avro tools -------------------------------------------------


def to_avro(value: Any, schema: AvroSchema) -> Any:
    """A copy of a (valid) document that fastavro can write, following the mapping above."""
    return _convert(value, schema.schema, schema.named)


def _convert(value: Any, schema: Any, named: dict[str, Any]) -> Any:  # noqa: PLR0911
    schema = resolve(schema, named)
    if isinstance(schema, list):
        for branch in schema:
            if conforms(value, branch, named):
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
    if isinstance(kind, str) and kind in PRIMITIVES:
        return _convert(value, kind, named)
    return value
