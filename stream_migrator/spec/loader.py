"""Read a YAML migration spec into a :class:`MigrationSpec`, or say precisely what is wrong.

Every problem is reported at once, each as ``file:line: step N (kind): what is
wrong; what to do``. Values in the YAML (``default``'s value, ``drop``'s
``restore``, ``filter`` operands, ``examples``) may use MongoDB Extended JSON
for BSON types: ``{$oid: ...}``, ``{$date: ...}``, ``{$numberDecimal: ...}``,
``{$numberLong: ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_migrator.errors import ConfigError
from stream_migrator.hook_policy import NO_HOOKS, HookPolicy
from stream_migrator.spec.avro import AvroSchema, load_schema
from stream_migrator.spec.ejson import bson_value
from stream_migrator.spec.errors import SpecError
from stream_migrator.spec.model import MigrationSpec, Namespace
from stream_migrator.spec.step_builders import build_step, build_top_hook
from stream_migrator.spec.steps import BaseStep
from stream_migrator.spec.yaml_lines import LineMap, LoadContext, check_keys, line_of, read_yaml

#: Where ``schemas/<schema>.v<N>.avsc`` are looked up unless the spec sets ``schema_dir``.
DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

_TOP_REQUIRED = ("name", "source", "target", "from_version", "to_version", "steps")
_TOP_OPTIONAL = ("description", "schema", "schema_dir", "hook", "examples")


def load_spec(path: str | Path, hooks: HookPolicy = NO_HOOKS) -> MigrationSpec:
    """Load a spec file; raises :class:`SpecError` listing every problem with its line.

    ``hooks``: which hook modules may be imported (none by default, see
    :mod:`stream_migrator.hook_policy`).
    """
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read spec file {file}: {exc.strerror or exc}") from None
    return parse_spec(text, origin=str(path), base_dir=file.resolve().parent, hooks=hooks)


def parse_spec(
    text: str,
    origin: str = "<spec>",
    base_dir: Path | None = None,
    hooks: HookPolicy = NO_HOOKS,
) -> MigrationSpec:
    """Parse spec YAML; ``base_dir`` anchors ``schema_dir`` and hook modules (default: cwd)."""
    ctx = LoadContext(origin, base_dir or Path.cwd(), hooks)
    raw = read_yaml(text, origin)
    if not isinstance(raw, LineMap):
        raise SpecError([f"{origin}:1: a spec is a mapping with keys {', '.join(_TOP_REQUIRED)}"])
    spec = _build(raw, ctx)
    if ctx.problems or spec is None:
        raise SpecError(ctx.problems)
    return spec


def _build(raw: LineMap, ctx: LoadContext) -> MigrationSpec | None:
    check_keys(raw, _TOP_REQUIRED, _TOP_OPTIONAL, ctx)
    name = _string(raw, "name", ctx)
    source = _namespace(raw, "source", ctx)
    target = _namespace(raw, "target", ctx)
    versions = [_version(raw, key, ctx) for key in ("from_version", "to_version")]
    schema_name: str | None = source.collection if source else None
    if "schema" in raw:
        schema_name = None if raw["schema"] is None else _string(raw, "schema", ctx)
    schema_dir = DEFAULT_SCHEMA_DIR
    if "schema_dir" in raw and (value := _string(raw, "schema_dir", ctx)):
        schema_dir = (ctx.base_dir / value).resolve()
    source_schema, target_schema = None, None
    from_v, to_v = versions
    if schema_name and from_v and to_v:
        source_schema = _schema(schema_dir, schema_name, from_v, raw, ctx, required=False)
        target_schema = _schema(schema_dir, schema_name, to_v, raw, ctx, required=True)
    steps: list[BaseStep] = []
    raw_steps = raw.get("steps")
    if "steps" in raw and not isinstance(raw_steps, list):
        ctx.err(line_of(raw, "steps"), "steps must be a list, e.g. `- rename: {from: a, to: b}`")
    for number, item in enumerate(raw_steps if isinstance(raw_steps, list) else [], 1):
        step = build_step(item, number, raw, ctx)
        if step is not None:
            steps.append(step)
    if "hook" in raw:
        ctx.step = "hook"
        hook = build_top_hook(raw, ctx)
        ctx.step = None
        if hook is not None:
            steps.append(hook)
    examples = _examples(raw, ctx)
    if ctx.problems or not name or source is None or target is None or not all(versions):
        return None
    label = schema_name or source.collection
    return MigrationSpec(
        name=name,
        source_version=f"{label}.v{versions[0]}",
        target_version=f"{label}.v{versions[1]}",
        steps=tuple(steps),
        source=source,
        target=target,
        source_schema=source_schema,
        target_schema=target_schema,
        examples=tuple(examples),
        origin=ctx.origin,
        description=str(raw.get("description") or ""),
    )


def _string(m: LineMap, key: str, ctx: LoadContext) -> str | None:
    value = m.get(key)
    if not isinstance(value, str) or not value.strip():
        ctx.err(line_of(m, key), f"{key} must be a non-empty string, got {value!r}")
        return None
    return value


def _namespace(raw: LineMap, key: str, ctx: LoadContext) -> Namespace | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, LineMap):
        ctx.err(line_of(raw, key), f"{key} must be a mapping like {{db: shop, collection: orders}}")
        return None
    if not check_keys(value, ("db", "collection"), (), ctx):
        return None
    db, coll = _string(value, "db", ctx), _string(value, "collection", ctx)
    return Namespace(db, coll) if db and coll else None


def _version(raw: LineMap, key: str, ctx: LoadContext) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        ctx.err(line_of(raw, key), f"{key} must be a version number like 2, got {value!r}")
        return None
    return str(value)


def _schema(
    schema_dir: Path, name: str, version: str, raw: LineMap, ctx: LoadContext, *, required: bool
) -> AvroSchema | None:
    path = schema_dir / f"{name}.v{version}.avsc"
    if not path.exists():
        if required:
            ctx.err(
                line_of(raw, "to_version"),
                f"target schema {path} does not exist; write it (target documents are "
                "validated against it), set `schema_dir`, or set `schema: null` to skip "
                "validation",
            )
        return None
    try:
        return load_schema(path)
    except ConfigError as exc:
        ctx.err(line_of(raw, "schema") if "schema" in raw else raw.line, str(exc))
        return None


def _examples(raw: LineMap, ctx: LoadContext) -> list[dict[str, Any]]:
    value = raw.get("examples")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        ctx.err(line_of(raw, "examples"), "examples must be a list of source documents")
        return []
    out: list[dict[str, Any]] = []
    for item in value:
        try:
            out.append(bson_value(item))
        except ValueError as exc:
            ctx.err(item.line if isinstance(item, LineMap) else line_of(raw, "examples"), str(exc))
    return out
