"""Build each step of a spec from its YAML options, reporting every problem at its line."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stream_migrator.spec import casts, query
from stream_migrator.spec.ejson import bson_value
from stream_migrator.spec.hook_steps import Computed, Filter, Hook
from stream_migrator.spec.paths import MISSING
from stream_migrator.spec.reshape_steps import Merge, Move, Rename, Split, template_fields
from stream_migrator.spec.steps import ON_ERROR, BaseStep, DocFunction, OnError
from stream_migrator.spec.value_steps import Cast, Default, Drop
from stream_migrator.spec.yaml_lines import LineMap, LoadContext, check_keys, line_of, suggest

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


def build_step(item: Any, number: int, raw: LineMap, ctx: LoadContext) -> BaseStep | None:
    """Step ``number`` of ``raw``'s steps, or None (its problems reported)."""
    line = item.line if isinstance(item, LineMap) else line_of(raw, "steps")
    kinds = tuple(STEP_OPTIONS)
    if not isinstance(item, LineMap) or len(item) != 1:
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
                f"unknown step {kind!r}; {suggest(str(kind), kinds)}expected one of "
                f"{', '.join(kinds)}",
            )
            return None
        if not isinstance(options, LineMap):
            ctx.err(line, f"{kind} takes a mapping of options: {', '.join(_all_options(kind))}")
            return None
        required, optional = STEP_OPTIONS[kind]
        if not check_keys(options, required, optional, ctx):
            return None
        before = len(ctx.problems)
        step = _BUILDERS[kind](options, ctx)
        return step if len(ctx.problems) == before else None
    finally:
        ctx.step = None


def _all_options(kind: str) -> list[str]:
    required, optional = STEP_OPTIONS[kind]
    return [*required, *optional]


def _path(o: LineMap, key: str, ctx: LoadContext) -> str:
    value = o.get(key)
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        ctx.err(
            line_of(o, key),
            f"{key}: {value!r} is not a field path; write names joined by dots, like "
            "customer.name (no leading $, no empty parts)",
        )
        return ""
    if value.split(".")[0] == "_id":
        ctx.err(line_of(o, key), f"{key}: _id cannot be changed: the target is keyed by it")
        return ""
    return value


def _names(o: LineMap, key: str, ctx: LoadContext, *, minimum: int = 1) -> tuple[str, ...]:
    value = o.get(key)
    if (
        not isinstance(value, list)
        or len(value) < minimum
        or not all(isinstance(v, str) and _PATH.fullmatch(v) for v in value)
        or len(set(value)) != len(value)
    ):
        ctx.err(
            line_of(o, key),
            f"{key} must be a list of at least {minimum} distinct field names, got {value!r}",
        )
        return ()
    if any(v.split(".")[0] == "_id" for v in value):
        ctx.err(line_of(o, key), f"{key}: _id cannot be changed: the target is keyed by it")
        return ()
    return tuple(value)


def _on_error(o: LineMap, ctx: LoadContext) -> OnError:
    value = o.get("on_error", "quarantine")
    if value not in ON_ERROR:
        ctx.err(
            line_of(o, "on_error"),
            f"unknown on_error {value!r}; {suggest(str(value), ON_ERROR)}"
            f"expected one of {', '.join(ON_ERROR)}",
        )
        return "quarantine"
    return value  # type: ignore[no-any-return]  # checked against ON_ERROR


def _value(o: LineMap, key: str, ctx: LoadContext) -> Any:
    try:
        return bson_value(o[key])
    except ValueError as exc:
        ctx.err(line_of(o, key), f"{key}: {exc}")
        return None


def _build_rename(o: LineMap, ctx: LoadContext) -> BaseStep:
    src, dst = _path(o, "from", ctx), _path(o, "to", ctx)
    if src and src == dst:
        ctx.err(o.line, f"from and to are both {src!r}; remove the step")
    return Rename(src, dst)


def _build_move(o: LineMap, ctx: LoadContext) -> BaseStep:
    fields = _names(o, "fields", ctx)
    if ("into" in o) == ("out_of" in o):
        ctx.err(o.line, "move takes exactly one of `into` (a sub-document) or `out_of`")
        return Move(fields)
    key = "into" if "into" in o else "out_of"
    container = _path(o, key, ctx)
    return Move(fields, into=container) if key == "into" else Move(fields, out_of=container)


def _build_split(o: LineMap, ctx: LoadContext) -> BaseStep:
    field = _path(o, "field", ctx)
    to = _path(o, "to", ctx) if "to" in o else field
    strip = o.get("strip", True)
    if not isinstance(strip, bool):
        ctx.err(line_of(o, "strip"), "strip must be true or false")
        strip = True
    on_error = _on_error(o, ctx)
    if ("pattern" in o) == ("separator" in o):
        ctx.err(o.line, "split takes exactly one of `pattern` (named groups) or `separator`")
        return Split(field, to, (), "")
    if "pattern" in o:
        return _split_pattern(o, field, to, strip, on_error, ctx)
    separator = o.get("separator")
    if not isinstance(separator, str) or not separator:
        ctx.err(line_of(o, "separator"), "separator must be a non-empty string")
        return Split(field, to, (), "")
    parts = _names(o, "into", ctx, minimum=2) if "into" in o else ()
    if "into" not in o:
        ctx.err(o.line, "split by separator needs `into`: the names of the parts, in order")
    join = o.get("join", separator)
    if not isinstance(join, str):
        ctx.err(
            line_of(o, "join"), "join must be a string (the text the inverse puts between parts)"
        )
        join = separator
    return Split(field, to, parts, join, separator=separator, strip=strip, on_error=on_error)


def _split_pattern(
    o: LineMap, field: str, to: str, strip: bool, on_error: OnError, ctx: LoadContext
) -> BaseStep:
    pattern = o.get("pattern")
    try:
        groups = tuple(re.compile(str(pattern)).groupindex)
    except re.error as exc:
        ctx.err(line_of(o, "pattern"), f"pattern is not a valid regular expression: {exc}")
        return Split(field, to, (), "")
    if not groups:
        ctx.err(line_of(o, "pattern"), "pattern needs named groups, like (?P<street>[^,]+)")
    if "into" in o:
        ctx.err(line_of(o, "into"), "with a pattern, the parts are the named groups; remove `into`")
    join = o.get("join")
    if not isinstance(join, str):
        ctx.err(
            line_of(o, "join") if "join" in o else o.line,
            "split by pattern needs `join`: a template of the groups for the inverse, like "
            "'{" + "}, {".join(groups or ("a", "b")) + "}'",
        )
        return Split(field, to, groups, "")
    try:
        used = template_fields(join)
    except ValueError as exc:
        ctx.err(line_of(o, "join"), f"join is not a valid template: {exc}")
        return Split(field, to, groups, "")
    if sorted(used) != sorted(groups):
        ctx.err(
            line_of(o, "join"),
            f"join must use every group exactly once: groups {', '.join(groups)}; "
            f"join uses {', '.join(used) or 'none'}",
        )
    return Split(field, to, groups, join, pattern=str(pattern), strip=strip, on_error=on_error)


def _build_merge(o: LineMap, ctx: LoadContext) -> BaseStep:
    fields = _names(o, "fields", ctx, minimum=2)
    separator = o.get("separator", " ")
    if not isinstance(separator, str) or not separator:
        ctx.err(line_of(o, "separator"), "separator must be a non-empty string")
        separator = " "
    return Merge(fields, _path(o, "into", ctx), separator, _on_error(o, ctx))


def _build_default(o: LineMap, ctx: LoadContext) -> BaseStep:
    value = _value(o, "value", ctx)
    if value is None:
        ctx.err(line_of(o, "value"), "a default value cannot be null (null is what it replaces)")
    return Default(_path(o, "field", ctx), value)


def _build_cast(o: LineMap, ctx: LoadContext) -> BaseStep:
    field = _path(o, "field", ctx)
    to = _cast_type(o, "to", ctx)
    source = _cast_type(o, "from", ctx) if "from" in o else None
    if to and source and source not in casts.SOURCES[to]:
        ctx.err(
            line_of(o, "from"),
            f"cannot cast {source} to {to}; {to} can be cast from "
            f"{', '.join(sorted(casts.SOURCES[to]))}",
        )
    fmt = o.get("format")
    if fmt is not None:
        if not isinstance(fmt, str) or "%" not in fmt:
            ctx.err(line_of(o, "format"), "format must be a strftime pattern like '%Y-%m-%d'")
            fmt = None
        elif "date" not in (to, source) or "string" not in (to, source):
            ctx.err(line_of(o, "format"), "format applies only to casts between string and date")
    return Cast(field, to or "string", source, _on_error(o, ctx), fmt)


def _cast_type(o: LineMap, key: str, ctx: LoadContext) -> str:
    value = o.get(key)
    if value not in casts.CAST_TYPES:
        ctx.err(
            line_of(o, key),
            f"unknown type {value!r}; {suggest(str(value), casts.CAST_TYPES)}"
            f"expected one of {', '.join(casts.CAST_TYPES)}",
        )
        return ""
    return str(value)


def _build_drop(o: LineMap, ctx: LoadContext) -> BaseStep:
    restore = _value(o, "restore", ctx) if "restore" in o else MISSING
    return Drop(_path(o, "field", ctx), restore)


def _build_computed(o: LineMap, ctx: LoadContext) -> BaseStep:
    ref, fn = _hook(o, "hook", ctx)
    return Computed(_path(o, "field", ctx), ref, fn)


def _build_hook(o: LineMap, ctx: LoadContext) -> BaseStep:
    ref, fn = _hook(o, "apply", ctx)
    if o.get("inverse") is None:
        return Hook(ref, fn)
    inverse_ref, inverse_fn = _hook(o, "inverse", ctx)
    return Hook(ref, fn, inverse_ref, inverse_fn)


def build_top_hook(raw: LineMap, ctx: LoadContext) -> BaseStep | None:
    """The spec's top-level ``hook``, run after the steps."""
    value = raw["hook"]
    if isinstance(value, str):
        ref, fn = _hook(raw, "hook", ctx)
        return Hook(ref, fn)
    if not isinstance(value, LineMap) or not check_keys(value, ("apply",), ("inverse",), ctx):
        if not isinstance(value, LineMap):
            ctx.err(line_of(raw, "hook"), "hook is `module:function` or {apply: ..., inverse: ...}")
        return None
    return _build_hook(value, ctx)


def _build_filter(o: LineMap, ctx: LoadContext) -> BaseStep:
    if ("match" in o) == ("hook" in o):
        ctx.err(o.line, "filter takes exactly one of `match` (a query) or `hook` (a predicate)")
        return Filter()
    if "hook" in o:
        ref, fn = _hook(o, "hook", ctx)
        return Filter(ref=ref, predicate=fn)
    for problem in query.problems(o["match"], "match"):
        ctx.err(line_of(o, "match"), problem)
    match = _value(o, "match", ctx)
    return Filter(query=match if isinstance(match, dict) else {})


def _unavailable(_doc: dict[str, Any]) -> Any:
    raise RuntimeError("hook could not be loaded")


def _hook(o: LineMap, key: str, ctx: LoadContext) -> tuple[str, DocFunction]:
    ref = o.get(key)
    line = line_of(o, key)
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


_BUILDERS: dict[str, Callable[[LineMap, LoadContext], BaseStep]] = {
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
