"""From a change event to the target write it calls for: shared by the worker and replay."""

from __future__ import annotations

from typing import Any

from stream_migrator.events import ChangeEvent
from stream_migrator.interfaces import TargetWrite, Transformer


def to_target_write(
    event: ChangeEvent, transformer: Transformer, tag: Any = None
) -> TargetWrite | None:
    """The version-guarded write for ``event``, or None when there is nothing to write.

    Raises TransformError when the document cannot be migrated (-> quarantine).
    """
    if event.op == "delete":
        return TargetWrite(event.doc_id, event.cluster_time, None, tag)
    if event.document is None:
        # An update whose document was deleted before updateLookup ran: the
        # delete event follows on the same partition; nothing to write now.
        return None
    # transform + target schema; None: the spec's filter leaves this document out (now).
    # The target must not hold it, so that is a version-guarded delete: an update that
    # moves a document out of the filter removes its earlier copy, and a later change
    # that brings it back in writes it again.
    target = transformer.migrate(event.document)
    return TargetWrite(event.doc_id, event.cluster_time, target, tag)
