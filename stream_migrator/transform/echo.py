"""Echoes: a stream's own writes seen again by the stream that captures the other side.

With the forward and the reverse stream both running, each would carry the other's
writes back. The forward sink stamps ``_sm.v`` with a cluster time, which tells
its writes from applications' (:func:`is_forward_echo`); the reverse sink marks
each document it writes with the hash of its content (:func:`echo_mark`), which
tells it from a later application write (:func:`is_marked_echo`). The sinks drop
echoes after coalescing, so the newest change of a document decides.
"""

from __future__ import annotations

from typing import Any

from stream_migrator import events
from stream_migrator.canonical import doc_hash
from stream_migrator.events import META_FIELD


def echo_mark(doc: dict[str, Any]) -> bytes:
    """The content hash a marking sink stores in ``_sm.echo`` (``_sm`` and key order ignored)."""
    return doc_hash(doc)


def is_marked_echo(doc: dict[str, Any] | None) -> bool:
    """True when ``doc`` is exactly what a marking sink wrote (nobody changed it since)."""
    meta = (doc or {}).get(META_FIELD)
    mark = meta.get("echo") if isinstance(meta, dict) else None
    return isinstance(mark, bytes) and doc is not None and mark == echo_mark(doc)


def is_forward_echo(event: events.ChangeEvent) -> bool:
    """True when a change of the new collection was written by the forward sink.

    Pure: upserts are decided by their document's ``_sm.v`` (a cluster time = the
    pipeline, an application increment or none = an application). Deletes carry no
    document; the reverse sink decides them by the forward tombstones.
    """
    if event.op == "delete" or event.document is None:
        return False
    meta = event.document.get(META_FIELD)
    version = meta.get("v") if isinstance(meta, dict) else None
    return isinstance(version, int) and not events.is_app_version(version)
