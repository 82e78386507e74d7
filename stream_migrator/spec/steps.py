"""Declarative migration steps. Each step rewrites a document in place and knows its inverse.

Every step is pure and deterministic: the same input document always gives the
same output, and nothing but the document is read or written. ``reversible``
says whether ``invert`` gives back every document of the step's domain;
``inverse_note`` says what that domain is (where the inverse is exact).

Copy-on-write: :class:`~stream_migrator.spec.model.MigrationSpec` hands the
steps a shallow copy of the caller's document, whose sub-documents and arrays
are the caller's. A step that declares ``copy_on_write = True`` (every built-in
step: they write only through :mod:`~stream_migrator.spec.paths`) changes the
top-level dict only and replaces, never modifies, a sub-document it writes
into. A step without the declaration gets a private deep copy. Hooks likewise
get a deep copy of the document unless their function is marked
:func:`read_only`.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from bson import ObjectId
from bson.decimal128 import Decimal128

from stream_migrator.errors import TransformError
from stream_migrator.spec import casts
from stream_migrator.spec.errors import FilteredOut
from stream_migrator.spec.paths import MISSING, get_path, pop_path, set_path
from stream_migrator.spec.query import matches

OnError = Literal["quarantine", "null", "keep"]
ON_ERROR: tuple[OnError, ...] = ("quarantine", "null", "keep")
DocFunction = Callable[[dict[str, Any]], Any]
_Fn = TypeVar("_Fn", bound=Callable[..., Any])

#: The attribute :func:`read_only` sets on a hook function.
READ_ONLY_ATTR = "sm_read_only"

#: Values that cannot be changed in place, so a step may share them between documents.
_IMMUTABLE = (str, int, float, bool, type(None), bytes, Decimal128, ObjectId, dt.datetime)


def read_only(fn: _Fn) -> _Fn:
    """Declare that a hook never modifies the document it is given (nor anything in it).

    A hook so marked is called with the spec's working document itself, whose
    sub-documents are shared with the caller's input; an unmarked hook gets a deep
    copy (safe, and slower: the copy costs more than most hooks). What a hook
    returns may share parts of its argument either way.
    """
    setattr(fn, READ_ONLY_ATTR, True)
    return fn


def _private(value: Any) -> Any:
    """``value`` itself when it cannot be changed in place, else a deep copy."""
    return value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)


class Step(Protocol):
    """One reversible rewrite of a document (what :class:`MigrationSpec` needs of a step).

    Optional attributes: ``copy_on_write`` (True: the step changes only the
    top-level dict it is given and copies any sub-document before writing into
    it; absent or False: the spec gives it a private deep copy), ``kind`` and
    ``reversible`` (see :func:`~stream_migrator.spec.model.step_kind`).
    """

    def apply(self, doc: dict[str, Any]) -> None: ...

    def invert(self, doc: dict[str, Any]) -> None: ...


class BaseStep:
    """Common surface of the built-in steps: a kind, reversibility and a description."""

    kind: ClassVar[str] = "step"
    #: Built-in steps write through ``paths.set_path``/``pop_path`` (see the module
    #: docstring); a subclass that changes sub-documents in place must say False.
    copy_on_write: ClassVar[bool] = True

    @property
    def reversible(self) -> bool:
        return True

    def describe(self) -> str:
        return self.kind

    def inverse_note(self) -> str:
        return "exact"

    def apply(self, doc: dict[str, Any]) -> None:
        raise NotImplementedError

    def invert(self, doc: dict[str, Any]) -> None:
        raise NotImplementedError


def _error(field: str, message: str) -> TransformError:
    return TransformError(f"{field}: {message}", field=field)


def _reject(doc: dict[str, Any], field: str, message: str, on_error: OnError) -> None:
    """The explicit failure behaviour: quarantine (raise), null the field, or keep it as is."""
    if on_error == "quarantine":
        raise _error(field, message)
    if on_error == "null":
        set_path(doc, field, None)


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
            raise _error(
                ".".join(parents[: i + 1]),
                f"is a {casts.type_name(child)}, not a sub-document; {doing()} cannot put "
                f"{path} inside it",
            )
        node = child
    if leaf in node:
        raise _error(path, f"already exists; {doing()} would overwrite it")


def _move(doc: dict[str, Any], src: str, dst: str) -> None:
    value = pop_path(doc, src)
    if value is MISSING:
        return
    _check_free(doc, dst, lambda: f"moving {src} to {dst}")
    set_path(doc, dst, value)


def _call_hook(ref: str, fn: DocFunction, doc: dict[str, Any], field: str) -> Any:
    """Run a user hook (on a private copy unless :func:`read_only`); errors -> TransformError."""
    try:
        return fn(doc if getattr(fn, READ_ONLY_ATTR, False) else copy.deepcopy(doc))
    except TransformError:
        raise
    except Exception as exc:
        raise _error(field, f"hook {ref} failed: {type(exc).__name__}: {exc}") from exc


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
class Split(BaseStep):
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
            return _reject(doc, self.field, expected, self.on_error)
        text = value.strip() if self.strip else value
        pieces: list[str]
        if self.pattern is not None:
            match = self._regex.fullmatch(text)
            if match is None:
                bad = f"{casts.shown(value)} does not match {self.pattern!r}"
                return _reject(doc, self.field, bad, self.on_error)
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
                return _reject(doc, self.field, bad, self.on_error)
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
            raise _error(
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

    @property
    def reversible(self) -> bool:
        return self.on_error != "null"

    def describe(self) -> str:
        how = f"pattern {self.pattern!r}" if self.pattern else f"separator {self.separator!r}"
        return f"split {self.field} -> {self.to}{{{', '.join(self.parts)}}} by {how}"

    def inverse_note(self) -> str:
        if self.on_error == "null":
            return "strings that cannot be split become null: lost on rollback"
        return f"exact when {self.field} is written the way the inverse joins it ({self.join!r})"


@dataclass(frozen=True)
class Merge(BaseStep):
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
            raise _error(name, problem)
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
            raise _error(
                self.into,
                f"cannot split back: {casts.shown(value)} has {len(pieces)} parts separated by "
                f"{self.separator!r}; expected {len(self.fields)}",
            )
        pop_path(doc, self.into)
        for name, piece in zip(self.fields, pieces, strict=True):
            set_path(doc, name, piece)

    @property
    def reversible(self) -> bool:
        return self.on_error != "null"

    def describe(self) -> str:
        return f"merge {', '.join(self.fields)} -> {self.into} with {self.separator!r}"

    def inverse_note(self) -> str:
        if self.on_error == "null":
            return "documents that cannot be merged lose those fields"
        return f"exact when {self.into} does not exist in the source"


@dataclass(frozen=True)
class Default(BaseStep):
    """Set ``field`` to ``value`` when missing or null.

    The inverse removes the field when it still holds the default; a source that
    stored the default value (or null) explicitly therefore loses that one field on rollback.
    """

    kind: ClassVar[str] = "default"
    field: str
    value: Any

    def apply(self, doc: dict[str, Any]) -> None:
        current = get_path(doc, self.field)
        if current is MISSING or current is None:
            set_path(doc, self.field, _private(self.value))

    def invert(self, doc: dict[str, Any]) -> None:
        if get_path(doc, self.field) == self.value:
            pop_path(doc, self.field)

    def describe(self) -> str:
        return f"default {self.field} = {self.value!r}"

    def inverse_note(self) -> str:
        return f"exact when {self.field} is absent, or neither null nor {self.value!r}"


@dataclass(frozen=True)
class Cast(BaseStep):
    """Cast ``field`` to a BSON type; ``source`` (YAML ``from``) is what the inverse restores."""

    kind: ClassVar[str] = "cast"
    field: str
    to: str
    source: str | None = None
    on_error: OnError = "quarantine"
    format: str | None = None

    def apply(self, doc: dict[str, Any]) -> None:
        value = get_path(doc, self.field)
        if value is MISSING or value is None or casts.is_type(value, self.to):
            return
        try:
            set_path(doc, self.field, casts.convert(value, self.to, self.format))
        except casts.CastFailure as exc:
            _reject(doc, self.field, f"cannot cast to {self.to}: {exc}", self.on_error)

    def invert(self, doc: dict[str, Any]) -> None:
        if self.source is None:
            return
        value = get_path(doc, self.field)
        if value is MISSING or value is None or not casts.is_type(value, self.to):
            return  # a value kept by on_error: keep is still of its source type
        try:
            set_path(doc, self.field, casts.convert(value, self.source, self.format))
        except casts.CastFailure as exc:
            raise _error(self.field, f"cannot cast back to {self.source}: {exc}") from None

    @property
    def reversible(self) -> bool:
        return (
            self.source is not None
            and (self.source, self.to) not in casts.LOSSY
            and self.on_error != "null"
            and (self.format is None or "%f" in self.format)
        )

    def describe(self) -> str:
        return f"cast {self.field} {self.source or 'any'} -> {self.to} (on_error: {self.on_error})"

    def inverse_note(self) -> str:
        if self.source is None:
            return "no `from:` type, so the inverse cannot know what to restore"
        if (self.source, self.to) in casts.LOSSY:
            return f"{self.source} -> {self.to} loses precision or form"
        if self.on_error == "null":
            return "values that fail the cast become null: lost on rollback"
        if self.format is not None and "%f" not in self.format:
            return f"format {self.format!r} drops the sub-second part"
        if self.source == "string":
            return "exact for strings in canonical form (as a cast to string writes them)"
        return f"exact for {self.source} values"


@dataclass(frozen=True)
class Drop(BaseStep):
    """Remove ``field``. Reversible only with ``restore``: the value the inverse puts back."""

    kind: ClassVar[str] = "drop"
    field: str
    restore: Any = MISSING

    def apply(self, doc: dict[str, Any]) -> None:
        pop_path(doc, self.field)

    def invert(self, doc: dict[str, Any]) -> None:
        if self.restore is not MISSING and get_path(doc, self.field) is MISSING:
            set_path(doc, self.field, _private(self.restore))

    @property
    def reversible(self) -> bool:
        return self.restore is not MISSING

    def describe(self) -> str:
        return f"drop {self.field}"

    def inverse_note(self) -> str:
        if self.restore is MISSING:
            return "the dropped value is not stored; give `restore:` if it is a constant"
        return f"exact when every source document held {self.field} = {self.restore!r}"


@dataclass(frozen=True)
class Computed(BaseStep):
    """Set ``field`` to ``hook(document)``; the inverse removes the field again."""

    kind: ClassVar[str] = "computed"
    field: str
    ref: str
    fn: DocFunction

    def apply(self, doc: dict[str, Any]) -> None:
        set_path(doc, self.field, _call_hook(self.ref, self.fn, doc, self.field))

    def invert(self, doc: dict[str, Any]) -> None:
        pop_path(doc, self.field)

    def describe(self) -> str:
        return f"computed {self.field} = {self.ref}(doc)"

    def inverse_note(self) -> str:
        return f"exact when the source has no {self.field}"


@dataclass(frozen=True)
class Hook(BaseStep):
    """Python for what the steps cannot express: ``fn(doc) -> new doc`` and its inverse."""

    kind: ClassVar[str] = "hook"
    ref: str
    fn: DocFunction
    inverse_ref: str | None = None
    inverse_fn: DocFunction | None = None

    def apply(self, doc: dict[str, Any]) -> None:
        _replace(doc, _call_hook(self.ref, self.fn, doc, "(document)"), self.ref)

    def invert(self, doc: dict[str, Any]) -> None:
        if self.inverse_fn is not None and self.inverse_ref is not None:
            new = _call_hook(self.inverse_ref, self.inverse_fn, doc, "(document)")
            _replace(doc, new, self.inverse_ref)

    @property
    def reversible(self) -> bool:
        return self.inverse_fn is not None

    def describe(self) -> str:
        return f"hook {self.ref}" + (f" (inverse {self.inverse_ref})" if self.inverse_ref else "")

    def inverse_note(self) -> str:
        if self.inverse_fn is None:
            return "no `inverse:` hook given"
        return f"as exact as {self.inverse_ref}"


def _replace(doc: dict[str, Any], new: Any, ref: str) -> None:
    if not isinstance(new, dict):
        raise _error("(document)", f"hook {ref} returned {casts.type_name(new)}, not a document")
    if new is doc:  # a read-only hook may hand back its argument unchanged
        return
    doc.clear()
    doc.update(new)


@dataclass(frozen=True)
class Filter(BaseStep):
    """Only documents that match migrate; the others raise :class:`FilteredOut` (not an error)."""

    kind: ClassVar[str] = "filter"
    query: dict[str, Any] | None = None
    ref: str | None = None
    predicate: DocFunction | None = None

    def apply(self, doc: dict[str, Any]) -> None:
        if self.query is not None:
            keep = matches(doc, self.query)
        else:
            assert self.predicate is not None
            assert self.ref is not None
            keep = bool(_call_hook(self.ref, self.predicate, doc, "(document)"))
        if not keep:
            raise FilteredOut(f"excluded by filter {self.describe()}")

    def invert(self, doc: dict[str, Any]) -> None:
        return None  # a document in the target passed the filter; nothing to undo

    def describe(self) -> str:
        return f"filter {self.query!r}" if self.query is not None else f"filter {self.ref}"

    def inverse_note(self) -> str:
        return "exact (a filter changes no document)"


def template_fields(template: str) -> list[str]:
    """The ``{name}`` fields of a join template (for load-time checks)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]
