"""Read a YAML migration spec into a :class:`MigrationSpec`, or say precisely what is wrong.

Every problem is reported at once, each as ``file:line: step N (kind): what is
wrong; what to do``. Values in the YAML (``default``'s value, ``drop``'s
``restore``, ``filter`` operands, ``examples``) may use MongoDB Extended JSON
for BSON types: ``{$oid: ...}``, ``{$date: ...}``, ``{$numberDecimal: ...}``,
``{$numberLong: ...}``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.errors import ConfigError
from stream_migrator.hook_policy import NO_HOOKS, HookPolicy
from stream_migrator.spec import casts, query
from stream_migrator.spec.avro import AvroSchema, load_schema
from stream_migrator.spec.errors import SpecError
from stream_migrator.spec.model import MigrationSpec, Namespace
from stream_migrator.spec.paths import MISSING
from stream_migrator.spec.steps import (
    ON_ERROR,
    BaseStep,
    Cast,
    Computed,
    Default,
    DocFunction,
    Drop,
    Filter,
    Hook,
    Merge,
    Move,
    OnError,
    Rename,
    Split,
    template_fields,
)

#: Where ``schemas/<schema>.v<N>.avsc`` are looked up unless the spec sets ``schema_dir``.
DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

_TOP_REQUIRED = ("name", "source", "target", "from_version", "to_version", "steps")
_TOP_OPTIONAL = ("description", "schema", "schema_dir", "hook", "examples")
#: step kind -> (required options, optional options)
STEP_OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rename": (("from", "to"), ()),
    "move": (("fields",), ("into", "out_of")),
    "split": (("field",), ("to", "pattern", "separator", "into", "join", "strip", "on_error")),
    "merge": (("fields", "into"), ("separator", "on_error")),
    "default": (("field", "value"), ()),
    "cast": (("field", "to"), ("from", "on_error", "format")),
    "drop": (("field",), ("restore",)),
    "computed": (("field", "hook"), ()),
    "hook": (("apply",), ("inverse",)),
    "filter": ((), ("match", "hook")),
}
_PATH = re.compile(r"[^.$\s][^.\s]*(\.[^.$\s][^.\s]*)*")


class _Map(dict[str, Any]):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`_Map` and whose duplicate keys are errors."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _Ctx:
    """Collects problems as ``origin:line: [step N (kind): ]message``."""

    def __init__(self, origin: str, base_dir: Path, hooks: HookPolicy = NO_HOOKS) -> None:
        self.origin = origin
        self.base_dir = base_dir
        self.hooks = hooks
        self.problems: list[str] = []
        self.step: str | None = None

    def err(self, line: int, message: str) -> None:
        where = f"{self.origin}:{line}: " + (f"{self.step}: " if self.step else "")
        self.problems.append(where + message)


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
    ctx = _Ctx(origin, base_dir or Path.cwd(), hooks)
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError([f"{origin}:{line}: not valid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"{origin}:1: not valid YAML: {exc}"]) from None
    if not isinstance(raw, _Map):
        raise SpecError([f"{origin}:1: a spec is a mapping with keys {', '.join(_TOP_REQUIRED)}"])
    spec = _build(raw, ctx)
    if ctx.problems or spec is None:
        raise SpecError(ctx.problems)
    return spec


def _line(m: _Map, key: str) -> int:
    return m.key_lines.get(key, m.line)


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_keys(m: _Map, required: tuple[str, ...], optional: tuple[str, ...], ctx: _Ctx) -> bool:
    ok = True
    allowed = (*required, *optional)
    for key in m:
        if key not in allowed:
            ctx.err(
                _line(m, key),
                f"unknown key {key!r}; {_suggest(str(key), allowed)}expected {', '.join(allowed)}",
            )
            ok = False
    for key in required:
        if key not in m:
            ctx.err(m.line, f"missing required key {key!r}")
            ok = False
    return ok


def _build(raw: _Map, ctx: _Ctx) -> MigrationSpec | None:
    _check_keys(raw, _TOP_REQUIRED, _TOP_OPTIONAL, ctx)
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
        ctx.err(_line(raw, "steps"), "steps must be a list, e.g. `- rename: {from: a, to: b}`")
    for number, item in enumerate(raw_steps if isinstance(raw_steps, list) else [], 1):
        step = _step(item, number, raw, ctx)
        if step is not None:
            steps.append(step)
    if "hook" in raw:
        ctx.step = "hook"
        hook = _top_hook(raw, ctx)
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


def _string(m: _Map, key: str, ctx: _Ctx) -> str | None:
    value = m.get(key)
    if not isinstance(value, str) or not value.strip():
        ctx.err(_line(m, key), f"{key} must be a non-empty string, got {value!r}")
        return None
    return value


def _namespace(raw: _Map, key: str, ctx: _Ctx) -> Namespace | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, _Map):
        ctx.err(_line(raw, key), f"{key} must be a mapping like {{db: shop, collection: orders}}")
        return None
    if not _check_keys(value, ("db", "collection"), (), ctx):
        return None
    db, coll = _string(value, "db", ctx), _string(value, "collection", ctx)
    return Namespace(db, coll) if db and coll else None


def _version(raw: _Map, key: str, ctx: _Ctx) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        ctx.err(_line(raw, key), f"{key} must be a version number like 2, got {value!r}")
        return None
    return str(value)


def _schema(
    schema_dir: Path, name: str, version: str, raw: _Map, ctx: _Ctx, *, required: bool
) -> AvroSchema | None:
    path = schema_dir / f"{name}.v{version}.avsc"
    if not path.exists():
        if required:
            ctx.err(
                _line(raw, "to_version"),
                f"target schema {path} does not exist; write it (target documents are "
                "validated against it), set `schema_dir`, or set `schema: null` to skip "
                "validation",
            )
        return None
    try:
        return load_schema(path)
    except ConfigError as exc:
        ctx.err(_line(raw, "schema") if "schema" in raw else raw.line, str(exc))
        return None


def _examples(raw: _Map, ctx: _Ctx) -> list[dict[str, Any]]:
    value = raw.get("examples")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        ctx.err(_line(raw, "examples"), "examples must be a list of source documents")
        return []
    out: list[dict[str, Any]] = []
    for item in value:
        try:
            out.append(plain(item))
        except ValueError as exc:
            ctx.err(item.line if isinstance(item, _Map) else _line(raw, "examples"), str(exc))
    return out


# -- values ------------------------------------------------------------------


def plain(value: Any) -> Any:
    """YAML value -> BSON-ready Python: plain dicts, Extended JSON and YAML dates converted."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key in _EJSON:
                return _EJSON[key](inner)
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return casts.convert(value, "date")
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return value


def _ejson_date(value: Any) -> dt.datetime:
    try:
        return casts.convert(value, "date")  # type: ignore[no-any-return]
    except casts.CastFailure as exc:
        raise ValueError(f"$date: {exc}") from None


def _ejson_oid(value: Any) -> ObjectId:
    if not isinstance(value, str) or not ObjectId.is_valid(value):
        raise ValueError(f"$oid: {value!r} is not 24 hex digits")
    return ObjectId(value)


def _ejson_decimal(value: Any) -> Decimal128:
    try:
        return casts.convert(str(value), "decimal")  # type: ignore[no-any-return]
    except casts.CastFailure as exc:
        raise ValueError(f"$numberDecimal: {exc}") from None


def _ejson_long(value: Any) -> Int64:
    try:
        return casts.convert(str(value), "long")  # type: ignore[no-any-return]
    except casts.CastFailure as exc:
        raise ValueError(f"$numberLong: {exc}") from None


_EJSON: dict[str, Callable[[Any], Any]] = {
    "$oid": _ejson_oid,
    "$date": _ejson_date,
    "$numberDecimal": _ejson_decimal,
    "$numberLong": _ejson_long,
}


# -- steps ---------------------------------------------------------------------


def _step(item: Any, number: int, raw: _Map, ctx: _Ctx) -> BaseStep | None:
    line = item.line if isinstance(item, _Map) else _line(raw, "steps")
    kinds = tuple(STEP_OPTIONS)
    if not isinstance(item, _Map) or len(item) != 1:
        ctx.step = f"step {number}"
        ctx.err(line, f"a step is one `kind: {{options}}` mapping; kinds: {', '.join(kinds)}")
        ctx.step = None
        return None
    ((kind, options),) = item.items()
    ctx.step = f"step {number} ({kind})"
    try:
        if kind not in STEP_OPTIONS:
            ctx.err(
                line,
                f"unknown step {kind!r}; {_suggest(str(kind), kinds)}expected one of "
                f"{', '.join(kinds)}",
            )
            return None
        if not isinstance(options, _Map):
            ctx.err(line, f"{kind} takes a mapping of options: {', '.join(_all_options(kind))}")
            return None
        required, optional = STEP_OPTIONS[kind]
        if not _check_keys(options, required, optional, ctx):
            return None
        before = len(ctx.problems)
        step = _BUILDERS[kind](options, ctx)
        return step if len(ctx.problems) == before else None
    finally:
        ctx.step = None


def _all_options(kind: str) -> list[str]:
    required, optional = STEP_OPTIONS[kind]
    return [*required, *optional]


def _path(o: _Map, key: str, ctx: _Ctx) -> str:
    value = o.get(key)
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        ctx.err(
            _line(o, key),
            f"{key}: {value!r} is not a field path; write names joined by dots, like "
            "customer.name (no leading $, no empty parts)",
        )
        return ""
    if value.split(".")[0] == "_id":
        ctx.err(_line(o, key), f"{key}: _id cannot be changed: the target is keyed by it")
        return ""
    return value


def _names(o: _Map, key: str, ctx: _Ctx, *, minimum: int = 1) -> tuple[str, ...]:
    value = o.get(key)
    if (
        not isinstance(value, list)
        or len(value) < minimum
        or not all(isinstance(v, str) and _PATH.fullmatch(v) for v in value)
        or len(set(value)) != len(value)
    ):
        ctx.err(
            _line(o, key),
            f"{key} must be a list of at least {minimum} distinct field names, got {value!r}",
        )
        return ()
    if any(v.split(".")[0] == "_id" for v in value):
        ctx.err(_line(o, key), f"{key}: _id cannot be changed: the target is keyed by it")
        return ()
    return tuple(value)


def _on_error(o: _Map, ctx: _Ctx) -> OnError:
    value = o.get("on_error", "quarantine")
    if value not in ON_ERROR:
        ctx.err(
            _line(o, "on_error"),
            f"unknown on_error {value!r}; {_suggest(str(value), ON_ERROR)}"
            f"expected one of {', '.join(ON_ERROR)}",
        )
        return "quarantine"
    return value  # type: ignore[no-any-return]  # checked against ON_ERROR


def _value(o: _Map, key: str, ctx: _Ctx) -> Any:
    try:
        return plain(o[key])
    except ValueError as exc:
        ctx.err(_line(o, key), f"{key}: {exc}")
        return None


def _build_rename(o: _Map, ctx: _Ctx) -> BaseStep:
    src, dst = _path(o, "from", ctx), _path(o, "to", ctx)
    if src and src == dst:
        ctx.err(o.line, f"from and to are both {src!r}; remove the step")
    return Rename(src, dst)


def _build_move(o: _Map, ctx: _Ctx) -> BaseStep:
    fields = _names(o, "fields", ctx)
    if ("into" in o) == ("out_of" in o):
        ctx.err(o.line, "move takes exactly one of `into` (a sub-document) or `out_of`")
        return Move(fields)
    key = "into" if "into" in o else "out_of"
    container = _path(o, key, ctx)
    return Move(fields, into=container) if key == "into" else Move(fields, out_of=container)


def _build_split(o: _Map, ctx: _Ctx) -> BaseStep:
    field = _path(o, "field", ctx)
    to = _path(o, "to", ctx) if "to" in o else field
    strip = o.get("strip", True)
    if not isinstance(strip, bool):
        ctx.err(_line(o, "strip"), "strip must be true or false")
        strip = True
    on_error = _on_error(o, ctx)
    if ("pattern" in o) == ("separator" in o):
        ctx.err(o.line, "split takes exactly one of `pattern` (named groups) or `separator`")
        return Split(field, to, (), "")
    if "pattern" in o:
        return _split_pattern(o, field, to, strip, on_error, ctx)
    separator = o.get("separator")
    if not isinstance(separator, str) or not separator:
        ctx.err(_line(o, "separator"), "separator must be a non-empty string")
        return Split(field, to, (), "")
    parts = _names(o, "into", ctx, minimum=2) if "into" in o else ()
    if "into" not in o:
        ctx.err(o.line, "split by separator needs `into`: the names of the parts, in order")
    join = o.get("join", separator)
    if not isinstance(join, str):
        ctx.err(_line(o, "join"), "join must be a string (the text the inverse puts between parts)")
        join = separator
    return Split(field, to, parts, join, separator=separator, strip=strip, on_error=on_error)


def _split_pattern(
    o: _Map, field: str, to: str, strip: bool, on_error: OnError, ctx: _Ctx
) -> BaseStep:
    pattern = o.get("pattern")
    try:
        groups = tuple(re.compile(str(pattern)).groupindex)
    except re.error as exc:
        ctx.err(_line(o, "pattern"), f"pattern is not a valid regular expression: {exc}")
        return Split(field, to, (), "")
    if not groups:
        ctx.err(_line(o, "pattern"), "pattern needs named groups, like (?P<street>[^,]+)")
    if "into" in o:
        ctx.err(_line(o, "into"), "with a pattern, the parts are the named groups; remove `into`")
    join = o.get("join")
    if not isinstance(join, str):
        ctx.err(
            _line(o, "join") if "join" in o else o.line,
            "split by pattern needs `join`: a template of the groups for the inverse, like "
            "'{" + "}, {".join(groups or ("a", "b")) + "}'",
        )
        return Split(field, to, groups, "")
    try:
        used = template_fields(join)
    except ValueError as exc:
        ctx.err(_line(o, "join"), f"join is not a valid template: {exc}")
        return Split(field, to, groups, "")
    if sorted(used) != sorted(groups):
        ctx.err(
            _line(o, "join"),
            f"join must use every group exactly once: groups {', '.join(groups)}; "
            f"join uses {', '.join(used) or 'none'}",
        )
    return Split(field, to, groups, join, pattern=str(pattern), strip=strip, on_error=on_error)


def _build_merge(o: _Map, ctx: _Ctx) -> BaseStep:
    fields = _names(o, "fields", ctx, minimum=2)
    separator = o.get("separator", " ")
    if not isinstance(separator, str) or not separator:
        ctx.err(_line(o, "separator"), "separator must be a non-empty string")
        separator = " "
    return Merge(fields, _path(o, "into", ctx), separator, _on_error(o, ctx))


def _build_default(o: _Map, ctx: _Ctx) -> BaseStep:
    value = _value(o, "value", ctx)
    if value is None:
        ctx.err(_line(o, "value"), "a default value cannot be null (null is what it replaces)")
    return Default(_path(o, "field", ctx), value)


def _build_cast(o: _Map, ctx: _Ctx) -> BaseStep:
    field = _path(o, "field", ctx)
    to = _cast_type(o, "to", ctx)
    source = _cast_type(o, "from", ctx) if "from" in o else None
    if to and source and source not in casts.SOURCES[to]:
        ctx.err(
            _line(o, "from"),
            f"cannot cast {source} to {to}; {to} can be cast from "
            f"{', '.join(sorted(casts.SOURCES[to]))}",
        )
    fmt = o.get("format")
    if fmt is not None:
        if not isinstance(fmt, str) or "%" not in fmt:
            ctx.err(_line(o, "format"), "format must be a strftime pattern like '%Y-%m-%d'")
            fmt = None
        elif "date" not in (to, source) or "string" not in (to, source):
            ctx.err(_line(o, "format"), "format applies only to casts between string and date")
    return Cast(field, to or "string", source, _on_error(o, ctx), fmt)


def _cast_type(o: _Map, key: str, ctx: _Ctx) -> str:
    value = o.get(key)
    if value not in casts.CAST_TYPES:
        ctx.err(
            _line(o, key),
            f"unknown type {value!r}; {_suggest(str(value), casts.CAST_TYPES)}"
            f"expected one of {', '.join(casts.CAST_TYPES)}",
        )
        return ""
    return str(value)


def _build_drop(o: _Map, ctx: _Ctx) -> BaseStep:
    restore = _value(o, "restore", ctx) if "restore" in o else MISSING
    return Drop(_path(o, "field", ctx), restore)


def _build_computed(o: _Map, ctx: _Ctx) -> BaseStep:
    ref, fn = _hook(o, "hook", ctx)
    return Computed(_path(o, "field", ctx), ref, fn)


def _build_hook(o: _Map, ctx: _Ctx) -> BaseStep:
    ref, fn = _hook(o, "apply", ctx)
    if o.get("inverse") is None:
        return Hook(ref, fn)
    inverse_ref, inverse_fn = _hook(o, "inverse", ctx)
    return Hook(ref, fn, inverse_ref, inverse_fn)


def _top_hook(raw: _Map, ctx: _Ctx) -> BaseStep | None:
    value = raw["hook"]
    if isinstance(value, str):
        ref, fn = _hook(raw, "hook", ctx)
        return Hook(ref, fn)
    if not isinstance(value, _Map) or not _check_keys(value, ("apply",), ("inverse",), ctx):
        if not isinstance(value, _Map):
            ctx.err(_line(raw, "hook"), "hook is `module:function` or {apply: ..., inverse: ...}")
        return None
    return _build_hook(value, ctx)


def _build_filter(o: _Map, ctx: _Ctx) -> BaseStep:
    if ("match" in o) == ("hook" in o):
        ctx.err(o.line, "filter takes exactly one of `match` (a query) or `hook` (a predicate)")
        return Filter()
    if "hook" in o:
        ref, fn = _hook(o, "hook", ctx)
        return Filter(ref=ref, predicate=fn)
    for problem in query.problems(o["match"], "match"):
        ctx.err(_line(o, "match"), problem)
    match = _value(o, "match", ctx)
    return Filter(query=match if isinstance(match, dict) else {})


def _unavailable(_doc: dict[str, Any]) -> Any:
    raise RuntimeError("hook could not be loaded")


def _hook(o: _Map, key: str, ctx: _Ctx) -> tuple[str, DocFunction]:
    ref = o.get(key)
    line = _line(o, key)
    if not isinstance(ref, str) or not re.fullmatch(r"[\w.]+:[\w.]+", ref):
        ctx.err(line, f"{key}: {ref!r} is not a hook; write module:function, like myhooks:total")
        return str(ref), _unavailable
    module_name, attr = ref.split(":")
    if not ctx.hooks.permits(module_name):
        ctx.err(line, f"{key}: {ctx.hooks.refusal(ref, module_name)}")
        return ref, _unavailable
    try:
        with _importable_from(ctx.base_dir):
            target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a spec problem to report
        ctx.err(
            line,
            f"{key}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); put it on "
            "PYTHONPATH or beside the spec file",
        )
        return ref, _unavailable
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        ctx.err(line, f"{key}: {module_name} has no function {attr!r}")
        return ref, _unavailable
    fn: DocFunction = target
    return ref, fn


@contextmanager
def _importable_from(directory: Path) -> Iterator[None]:
    """Hook modules may sit beside the spec file: import with its folder on sys.path."""
    entry = str(directory)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            sys.path.remove(entry)


_BUILDERS: dict[str, Callable[[_Map, _Ctx], BaseStep]] = {
    "rename": _build_rename,
    "move": _build_move,
    "split": _build_split,
    "merge": _build_merge,
    "default": _build_default,
    "cast": _build_cast,
    "drop": _build_drop,
    "computed": _build_computed,
    "hook": _build_hook,
    "filter": _build_filter,
}
