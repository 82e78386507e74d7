"""Random documents valid against an Avro schema (for ``spec check`` without a source)."""

from __future__ import annotations

import datetime as dt
import random
import string
from decimal import Decimal
from typing import Any

from bson import ObjectId
from bson.decimal128 import Decimal128

from stream_migrator.spec.avro import AvroSchema
from stream_migrator.spec.avro_validate import child_path, conforms, resolve

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
    schema = resolve(schema, named)
    seen = examples.get(path) if path != "_id" else None
    # Strings often have a format the spec relies on (an address it splits): take them
    # from the examples; other kinds are random half of the time, for coverage.
    if seen and (schema == "string" or rng.random() < 0.5):
        candidate = rng.choice(seen)
        if conforms(candidate, schema, named):
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
                f["type"], child_path(path, f["name"]), named, rng, examples, depth + 1
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
                walk(item, child_path(path, str(key)))
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}[]")

    for doc in examples:
        for key, item in doc.items():
            walk(item, key)
    return out
