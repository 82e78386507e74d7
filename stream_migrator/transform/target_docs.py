"""The documents the target writer sends, and how it compares what is there."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.canonical import doc_hash
from stream_migrator.events import META_FIELD
from stream_migrator.interfaces import TargetWrite
from stream_migrator.transform.echo import echo_mark


def stamped(w: TargetWrite, *, mark: bool = False) -> dict[str, Any]:
    """The document ``w`` writes: its ``_id``, and ``_sm.v`` = its version (+ echo mark)."""
    doc = dict(w.document or {})
    doc["_id"] = w.doc_id
    meta: dict[str, Any] = {"v": Int64(w.version)}
    if mark:
        meta["echo"] = echo_mark(doc)
    doc[META_FIELD] = meta
    return doc


def comparable(version: Any) -> int | float | Decimal | None:
    """A stored ``_sm.v`` as a number to compare with, or None (older than every event).

    As MongoDB's ``$gte`` does: only numbers (any numeric type) compare; a missing,
    null, bool, string or other value is never >= a version, so it counts as older.
    """
    if isinstance(version, Decimal128):
        number = version.to_decimal()
        return None if number.is_nan() else number
    if isinstance(version, bool) or not isinstance(version, int | float):
        return None
    return version


def same_content(current: dict[str, Any], w: TargetWrite | None) -> bool:
    """True when an upsert would leave ``current`` as it is (``_sm`` ignored).

    Compared as canonical BSON (doc_hash): field order is not data, but BSON types
    are (an int ``1``, a double ``1.0`` and ``true`` differ, though Python's ``==``
    calls them equal), so a change of type alone is written, not skipped.
    """
    if w is None or w.document is None:
        return False
    want = dict(w.document)
    want["_id"] = w.doc_id
    return doc_hash(current) == doc_hash(want)
