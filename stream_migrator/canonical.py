"""Canonical document encoding and hashing: what "the same document" means everywhere.

Two documents are "the same" when their canonical BSON is byte-identical:
keys sorted recursively (field order is not data), the stream-migrator metadata
field ``_sm`` removed, and every value kept with its BSON type (an int32 ``1``,
an int64 ``1`` and a Decimal128 ``1`` differ, as they do for a reader). Every
compare (reconcile, the gates, rollback verification) and every echo mark uses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import bson

from stream_migrator.events import META_FIELD


def canonical(doc: Mapping[str, Any], *, top: bool = True) -> dict[str, Any]:
    """``doc`` with keys sorted at every level and (at the top level) ``_sm`` removed."""
    return {k: _canonical_value(doc[k]) for k in sorted(doc) if not (top and k == META_FIELD)}


def _canonical_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return canonical(value, top=False)
    if isinstance(value, list | tuple):
        return [_canonical_value(v) for v in value]
    return value


def doc_hash(doc: Mapping[str, Any]) -> bytes:
    """16-byte BLAKE2b of the canonical BSON encoding."""
    return hashlib.blake2b(bson.encode(canonical(doc)), digest_size=16).digest()
