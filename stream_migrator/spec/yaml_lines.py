"""Spec YAML read with the line of every mapping and key, and problems reported at them.

A problem reads ``origin:line: [step N (kind): ]what is wrong; what to do``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from stream_migrator.hook_policy import NO_HOOKS, HookPolicy
from stream_migrator.spec.errors import SpecError


class LineMap(dict[str, Any]):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`LineMap` and whose duplicate keys are errors."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    out = LineMap()
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


def read_yaml(text: str, origin: str) -> Any:
    """The YAML in ``text``, its mappings :class:`LineMap`; invalid YAML is a SpecError."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError([f"{origin}:{line}: not valid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"{origin}:1: not valid YAML: {exc}"]) from None


class LoadContext:
    """Where a spec comes from (origin, folder, hook policy); collects its problems."""

    def __init__(self, origin: str, base_dir: Path, hooks: HookPolicy = NO_HOOKS) -> None:
        self.origin = origin
        self.base_dir = base_dir
        self.hooks = hooks
        self.problems: list[str] = []
        self.step: str | None = None

    def err(self, line: int, message: str) -> None:
        where = f"{self.origin}:{line}: " + (f"{self.step}: " if self.step else "")
        self.problems.append(where + message)


def line_of(m: LineMap, key: str) -> int:
    """The line of ``key`` in ``m``, or of ``m`` itself when the key is absent."""
    return m.key_lines.get(key, m.line)


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``did you mean 'x'? `` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def check_keys(
    m: LineMap, required: tuple[str, ...], optional: tuple[str, ...], ctx: LoadContext
) -> bool:
    """Report unknown and missing keys of ``m``; whether there were none."""
    ok = True
    allowed = (*required, *optional)
    for key in m:
        if key not in allowed:
            ctx.err(
                line_of(m, key),
                f"unknown key {key!r}; {suggest(str(key), allowed)}expected {', '.join(allowed)}",
            )
            ok = False
    for key in required:
        if key not in m:
            ctx.err(m.line, f"missing required key {key!r}")
            ok = False
    return ok
