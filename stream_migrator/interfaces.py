"""The seams between stages, as Protocols, so tests and Kafka Connect formats can plug in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TargetWrite:
    """One target-side effect: upsert ``document`` (or delete when None) at ``version``."""

    doc_id: Any
    version: int
    document: dict[str, Any] | None
    tag: Any = None  # caller's handle (e.g. the Kafka message), returned with failures
    # A write the pipeline itself caused on the collection it reads (a forward write
    # seen by the reverse stream): the reverse sink carries back only non-echoes.
    echo: bool = False


@dataclass
class ApplyResult:
    written: int = 0
    stale: int = 0
    coalesced: int = 0
    echoes: int = 0  # forward writes the reverse stream did not carry back
    failed: list[tuple[TargetWrite, str]] = field(default_factory=list)


class CheckpointStore(Protocol):
    """Where capture keeps its position; written only after Kafka acknowledged everything before."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, **fields: Any) -> None: ...


class Transformer(Protocol):
    """Rewrites one source document into the target shape (raises TransformError on bad input)."""

    def migrate(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The target document for ``doc``, checked against the target schema: what may be
        written; None when the migration leaves the document out (a filter): the target
        must not hold it. Never changes ``doc``; raises TransformError on bad input."""
        ...


class DocumentSink(Protocol):
    """Applies a batch of writes to the target idempotently (raises RetryableError to back off)."""

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult: ...
