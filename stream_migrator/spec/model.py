"""A migration spec: an ordered list of reversible steps from one document version to the next."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from stream_migrator import events
from stream_migrator.errors import TransformError
from stream_migrator.spec.avro import AvroSchema
from stream_migrator.spec.errors import FilteredOut
from stream_migrator.spec.steps import Step

META_FIELD = events.META_FIELD  # re-exported: spec users read it from here too


@dataclass(frozen=True)
class Namespace:
    """A collection as ``db.collection``."""

    db: str
    collection: str

    def __str__(self) -> str:
        return f"{self.db}.{self.collection}"


def step_kind(step: Any) -> str:
    """The YAML name of a step (``cast``), or its class name for a hand-written step."""
    return str(getattr(step, "kind", type(step).__name__))


def step_reversible(step: Any) -> bool:
    """A hand-written step without a ``reversible`` attribute counts as reversible."""
    return bool(getattr(step, "reversible", True))


def step_copies_on_write(step: Any) -> bool:
    """Whether ``step`` may get a document whose sub-documents it shares with the caller.

    A hand-written step without a ``copy_on_write`` attribute does not: it may
    change sub-documents in place, so the spec deep-copies the document for it
    (once: from then on the working copy is private).
    """
    return bool(getattr(step, "copy_on_write", False))


@dataclass(frozen=True)
class MigrationSpec:
    """Transform documents of ``source_version`` into ``target_version`` and back.

    ``transform`` and ``inverse`` are pure: the input is never modified, and the
    same input always gives the same output. They do not deep-copy it either:
    the output shares the sub-documents and arrays no step changed with the
    input (copy-on-write, see :mod:`stream_migrator.spec.steps`), so neither
    should be changed in place afterwards. The target schema is checked by
    :meth:`validate_target` (the worker calls :meth:`migrate`, which does both).
    """

    name: str
    source_version: str
    target_version: str
    steps: tuple[Step, ...]
    source: Namespace | None = None
    target: Namespace | None = None
    source_schema: AvroSchema | None = None
    target_schema: AvroSchema | None = None
    examples: tuple[dict[str, Any], ...] = ()
    origin: str | None = None
    description: str = ""

    def transform(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Return the target-shape copy of ``doc``, or None when a filter leaves it out.

        Raises TransformError on bad input (naming the field and the step).
        """
        out = _working_copy(doc)
        private = False
        for number, step, shares in self._forward:
            if not (shares or private):
                out, private = copy.deepcopy(out), True
            try:
                step.apply(out)
            except FilteredOut:
                return None
            except TransformError as exc:
                raise _located(exc, number, step) from None
        return out

    def inverse(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Return the source-shape copy of a target document (steps undone in reverse)."""
        out = _working_copy(doc)
        private = False
        for number, step, shares in reversed(self._forward):
            if not (shares or private):
                out, private = copy.deepcopy(out), True
            try:
                step.invert(out)
            except TransformError as exc:
                raise _located(exc, number, step, "inverse of ") from None
        return out

    @cached_property
    def _forward(self) -> tuple[tuple[int, Step, bool], ...]:
        """``(number, step, copies on write)`` of each step, worked out once per spec."""
        return tuple((n, s, step_copies_on_write(s)) for n, s in enumerate(self.steps, 1))

    def validate_target(self, doc: dict[str, Any]) -> None:
        """Check a transformed document against the target schema (no-op without one).

        Raises TransformError whose ``field`` is the path, e.g. ``address.zip``.
        """
        if self.target_schema is not None:
            self.target_schema.validate(_working_copy(doc) if META_FIELD in doc else doc)

    def migrate(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """:meth:`transform`, then :meth:`validate_target`: what may be written to the target.

        None when a filter leaves the document out (the target must not hold it).
        """
        out = self.transform(doc)
        if out is not None:
            self.validate_target(out)
        return out

    def irreversible_steps(self) -> list[tuple[int, Step]]:
        """``(number, step)`` of every step without an exact inverse, numbered from 1."""
        return [(n, s) for n, s in enumerate(self.steps, 1) if not step_reversible(s)]


def _working_copy(doc: dict[str, Any]) -> dict[str, Any]:
    """A new top-level dict without the meta field; its values are still the caller's."""
    out = dict(doc)
    out.pop(META_FIELD, None)
    return out


def _located(exc: TransformError, number: int, step: Any, prefix: str = "") -> TransformError:
    # The step goes last: quarantine reasons keep starting with the field path.
    label = f"{prefix}step {number} ({step_kind(step)})"
    located = TransformError(f"{exc} [{label}]", field=exc.field, step=label)
    located.__cause__ = exc.__cause__
    return located
