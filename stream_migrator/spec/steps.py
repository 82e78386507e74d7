"""What a migration step is: the protocol, the built-ins' base class, and their failure rule.

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
:func:`~stream_migrator.spec.hook_steps.read_only`.

The built-in steps: :mod:`~stream_migrator.spec.reshape_steps` (rename, move,
split, merge), :mod:`~stream_migrator.spec.value_steps` (default, cast, drop) and
:mod:`~stream_migrator.spec.hook_steps` (computed, hook, filter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

from stream_migrator.errors import TransformError
from stream_migrator.spec.paths import set_path

OnError = Literal["quarantine", "null", "keep"]
ON_ERROR: tuple[OnError, ...] = ("quarantine", "null", "keep")
DocFunction = Callable[[dict[str, Any]], Any]


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


class OnErrorStep(BaseStep):
    """A step with an ``on_error`` choice: ``null`` loses what failed, so no exact inverse."""

    on_error: OnError

    @property
    def reversible(self) -> bool:
        return self.on_error != "null"


def step_error(field: str, message: str) -> TransformError:
    """The error that quarantines a document, naming the field at fault."""
    return TransformError(f"{field}: {message}", field=field)


def reject(doc: dict[str, Any], field: str, message: str, on_error: OnError) -> None:
    """The explicit failure behaviour: quarantine (raise), null the field, or keep it as is."""
    if on_error == "quarantine":
        raise step_error(field, message)
    if on_error == "null":
        set_path(doc, field, None)
