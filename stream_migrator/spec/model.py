"""A migration spec: an ordered list of reversible steps from one document version to the next."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from stream_migrator.spec.steps import Step

#: Field every target document carries: the version guard and provenance.
META_FIELD = "_sm"


@dataclass(frozen=True)
class MigrationSpec:
    """Transform documents of ``source_version`` into ``target_version`` and back."""

    name: str
    source_version: str
    target_version: str
    steps: tuple[Step, ...]

    def transform(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Return the target-shape copy of ``doc``; raises TransformError on bad input."""
        out = copy.deepcopy(doc)
        out.pop(META_FIELD, None)
        for step in self.steps:
            step.apply(out)
        return out

    def inverse(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Return the source-shape copy of a target document (steps undone in reverse)."""
        out = copy.deepcopy(doc)
        out.pop(META_FIELD, None)
        for step in reversed(self.steps):
            step.invert(out)
        return out
