"""Steps that run the spec's Python: computed, hook, and the filter (a query or a predicate)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from stream_migrator.errors import TransformError
from stream_migrator.spec.casts import type_name
from stream_migrator.spec.errors import FilteredOut
from stream_migrator.spec.paths import pop_path, set_path
from stream_migrator.spec.query import matches
from stream_migrator.spec.steps import BaseStep, DocFunction, step_error

_Fn = TypeVar("_Fn", bound=Callable[..., Any])

#: The attribute :func:`read_only` sets on a hook function.
READ_ONLY_ATTR = "sm_read_only"


def read_only(fn: _Fn) -> _Fn:
    """Declare that a hook never modifies the document it is given (nor anything in it).

    A hook so marked is called with the spec's working document itself, whose
    sub-documents are shared with the caller's input; an unmarked hook gets a deep
    copy (safe, and slower: the copy costs more than most hooks). What a hook
    returns may share parts of its argument either way.
    """
    setattr(fn, READ_ONLY_ATTR, True)
    return fn


def _call_hook(ref: str, fn: DocFunction, doc: dict[str, Any], field: str) -> Any:
    """Run a user hook (on a private copy unless :func:`read_only`); errors -> TransformError."""
    try:
        return fn(doc if getattr(fn, READ_ONLY_ATTR, False) else copy.deepcopy(doc))
    except TransformError:
        raise
    except Exception as exc:
        raise step_error(field, f"hook {ref} failed: {type(exc).__name__}: {exc}") from exc


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
        raise step_error("(document)", f"hook {ref} returned {type_name(new)}, not a document")
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
