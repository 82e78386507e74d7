"""Steps that change where values sit: rename, move, split and merge."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from stream_migrator.spec import casts
from stream_migrator.spec.paths import MISSING, get_path, pop_path, set_path
from stream_migrator.spec.steps import BaseStep, OnError, OnErrorStep, reject, step_error


def _check_free(doc: dict[str, Any], path: str, doing: Callable[[], str]) -> None:
    """Refuse to overwrite: ``path`` must be absent and its parents sub-documents (or absent).

    ``doing()`` says what would overwrite it (built only for the message).
    """
    *parents, leaf = path.split(".")
    node: dict[str, Any] = doc
    for i, part in enumerate(parents):
        if part not in node:
            return
        child = node[part]
        if not isinstance(child, dict):
            raise step_error(
                ".".join(parents[: i + 1]),
                f"is a {casts.type_name(child)}, not a sub-document; {doing()} cannot put "
                f"{path} inside it",
            )
        node = child
    if leaf in node:
        raise step_error(path, f"already exists; {doing()} would overwrite it")


def _move(doc: dict[str, Any], src: str, dst: str) -> None:
    value = pop_path(doc, src)
    if value is MISSING:
        return
    _check_free(doc, dst, lambda: f"moving {src} to {dst}")
    set_path(doc, dst, value)


@dataclass(frozen=True)
class Rename(BaseStep):
    """Move ``src`` to ``dst`` (dotted paths, so this also nests and un-nests one field)."""

    kind: ClassVar[str] = "rename"
    src: str
    dst: str

    def apply(self, doc: dict[str, Any]) -> None:
        _move(doc, self.src, self.dst)

    def invert(self, doc: dict[str, Any]) -> None:
        _move(doc, self.dst, self.src)

    def describe(self) -> str:
        return f"rename {self.src} -> {self.dst}"

    def inverse_note(self) -> str:
        return f"exact when the source has no {self.dst}"


@dataclass(frozen=True)
class Move(BaseStep):
    """Move several fields into a sub-document (``into``) or out of one (``out_of``)."""

    kind: ClassVar[str] = "move"
    fields: tuple[str, ...]
    into: str | None = None
    out_of: str | None = None

    def _pairs(self) -> list[tuple[str, str]]:
        if self.into is not None:
            return [(f, f"{self.into}.{f}") for f in self.fields]
        return [(f"{self.out_of}.{f}", f) for f in self.fields]

    def apply(self, doc: dict[str, Any]) -> None:
        for src, dst in self._pairs():
            _move(doc, src, dst)

    def invert(self, doc: dict[str, Any]) -> None:
        for src, dst in reversed(self._pairs()):
            _move(doc, dst, src)

    def describe(self) -> str:
        names = ", ".join(self.fields)
        return (
            f"move {names} into {self.into}" if self.into else f"move {names} out of {self.out_of}"
        )

    def inverse_note(self) -> str:
        return "exact when no moved field already exists at its destination"


@dataclass(frozen=True)
class Split(OnErrorStep):
    """Split a string into a sub-document at ``to``, by a regex's named groups or a separator.

    ``join`` rebuilds the string for the inverse: a template of the group names
    (``"{street}, {city}, {zip}"``) in pattern mode, the text between the parts in
    separator mode. A null or missing value stays as it is.
    """

    kind: ClassVar[str] = "split"
    field: str
    to: str
    parts: tuple[str, ...]
    join: str
    pattern: str | None = None
    separator: str | None = None
    strip: bool = True
    on_error: OnError = "quarantine"

    def apply(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if value is MISSING or value is None:
            return
        if not isinstance(value, str):
            expected = f"expected a string, got {casts.type_name(value)}"
            return reject(doc, self.field, expected, self.on_error)
        text = value.strip() if self.strip else value
        pieces: list[str]
        if self.pattern is not None:
            match = self._regex.fullmatch(text)
            if match is None:
                bad = f"{casts.shown(value)} does not match {self.pattern!r}"
                return reject(doc, self.field, bad, self.on_error)
            pieces = [match.group(name) or "" for name in self.parts]
        else:
            assert self.separator is not None
            pieces = text.split(self.separator)
            if len(pieces) != len(self.parts):
                bad = (
                    f"{casts.shown(value)} has {len(pieces)} parts separated by "
                    f"{self.separator!r}; "
                    f"expected {len(self.parts)} ({', '.join(self.parts)})"
                )
                return reject(doc, self.field, bad, self.on_error)
        result = {
            name: piece.strip() if self.strip else piece
            for name, piece in zip(self.parts, pieces, strict=True)
        }
        if self.to != self.field:
            pop_path(doc, self.field)
            _check_free(doc, self.to, lambda: f"splitting {self.field} into {self.to}")
        set_path(doc, self.to, result)
        return None

    def invert(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.to)
        if not isinstance(value, dict):
            return  # missing, null, or a value kept by on_error: keep
        if set(value) != set(self.parts) or not all(isinstance(v, str) for v in value.values()):
            raise step_error(
                self.to,
                f"cannot join back: expected the string parts {', '.join(self.parts)}, "
                f"got {', '.join(sorted(value)) or 'an empty document'}",
            )
        if self.pattern is not None:
            text = self.join.format(**value)
        else:
            text = self.join.join(value[name] for name in self.parts)
        if self.to != self.field:
            pop_path(doc, self.to)
        set_path(doc, self.field, text)

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        assert self.pattern is not None
        return re.compile(self.pattern)

    def describe(self) -> str:
        how = f"pattern {self.pattern!r}" if self.pattern else f"separator {self.separator!r}"
        return f"split {self.field} -> {self.to}{{{', '.join(self.parts)}}} by {how}"

    def inverse_note(self) -> str:
        if self.on_error == "null":
            return "strings that cannot be split become null: lost on rollback"
        return f"exact when {self.field} is written the way the inverse joins it ({self.join!r})"


@dataclass(frozen=True)
class Merge(OnErrorStep):
    """Join string fields into one string at ``into``; the inverse splits at ``separator``.

    A value (other than the last) that contains the separator is refused, since
    the inverse could not tell where it ends.
    """

    kind: ClassVar[str] = "merge"
    fields: tuple[str, ...]
    into: str
    separator: str
    on_error: OnError = "quarantine"

    def apply(self, doc: dict[str, Any]) -> None:
        values = [get_path(doc, f) for f in self.fields]
        if all(v is MISSING for v in values):
            return
        for name, value in zip(self.fields, values, strict=True):
            problem = None
            if value is MISSING:
                problem = "is missing; merge needs every field or none"
            elif not isinstance(value, str):
                problem = f"expected a string, got {casts.type_name(value)}"
            elif name != self.fields[-1] and self.separator in value:
                problem = (
                    f"{casts.shown(value)} contains the separator {self.separator!r}; "
                    "the inverse could not split it back"
                )
            if problem is not None:
                return self._fail(doc, name, problem)
        for name in self.fields:
            pop_path(doc, name)
        _check_free(doc, self.into, lambda: f"merging into {self.into}")
        set_path(doc, self.into, self.separator.join(values))
        return None

    def _fail(self, doc: dict[str, Any], name: str, problem: str) -> None:
        if self.on_error == "quarantine":
            raise step_error(name, problem)
        if self.on_error == "null":
            for f in self.fields:
                pop_path(doc, f)
            set_path(doc, self.into, None)

    def invert(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.into)
        if not isinstance(value, str):
            return
        pieces = value.split(self.separator, len(self.fields) - 1)
        if len(pieces) != len(self.fields):
            raise step_error(
                self.into,
                f"cannot split back: {casts.shown(value)} has {len(pieces)} parts separated by "
                f"{self.separator!r}; expected {len(self.fields)}",
            )
        pop_path(doc, self.into)
        for name, piece in zip(self.fields, pieces, strict=True):
            set_path(doc, name, piece)

    def describe(self) -> str:
        return f"merge {', '.join(self.fields)} -> {self.into} with {self.separator!r}"

    def inverse_note(self) -> str:
        if self.on_error == "null":
            return "documents that cannot be merged lose those fields"
        return f"exact when {self.into} does not exist in the source"


def template_fields(template: str) -> list[str]:
    """The ``{name}`` fields of a join template (for load-time checks)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]
