"""Folding of the change events that share one ``clusterTime`` (one transaction).

Every event of a multi-document transaction carries the transaction's commit
``clusterTime``, and the version the sink guards with is that cluster time, with
an equal version kept out as stale. So two events of one document in one
transaction (insert then update, delete then insert, insert then delete) carry
the same version, and if a consumer batch boundary falls between them the second
is dropped. Capture therefore holds the events of one cluster time and emits only
the last event of each document: no two events of a document share a version.

On a replica set every oplog entry but a transaction's (or a batched write's)
has its own timestamp, so equal ``clusterTime`` means one transaction. Through
mongos, events of different shards may share a cluster time; they concern
different documents (a document lives on one shard), so folding per document
is still right.

An event outside a transaction (no ``txnNumber``) is released at once. A
transaction's group is complete when an event with another cluster time arrives,
or when the stream has nothing more: a committed transaction's events are all in the
oplog at once, so an empty answer never falls inside one. A checkpoint must never
land inside a group (a restart would resume after its first half and lose it):
:attr:`TransactionFolder.position` is the token just before the held group, or the
stream's own token once everything read has been released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream_migrator import events
from stream_migrator.errors import EnvelopeError

_DATA_OPS = {"insert", "update", "replace", "delete"}


class TransactionFolder:
    """Feed whole change events in stream order; get back the events that may be emitted."""

    def __init__(self, position: Any = None) -> None:
        self._group: list[Mapping[str, Any]] = []
        self._position = position
        self.folded = 0  # events replaced by a later event of their document

    @property
    def held(self) -> bool:
        """True while events of an unfinished cluster time are held back."""
        return bool(self._group)

    @property
    def position(self) -> Any:
        """The resume token a checkpoint may record (None: none known yet).

        Every event up to it has been released; nothing held is at or before it.
        """
        return self._position

    def add(self, change: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """Take the next event; returns the previous group, folded, once this one ends it."""
        at = change.get("clusterTime")
        released: list[Mapping[str, Any]] = []
        if self._group and at != self._group[0].get("clusterTime"):
            released = self._release(self._group[-1]["_id"])
        if at is None or ("txnNumber" not in change and not self._group):
            # Outside a transaction (MongoDB sets txnNumber only on a transaction's
            # events) an event is a group of its own: release it now rather than one
            # event late. One sharing the held group's time (another shard's, through
            # mongos) joins that group instead, so the group is never split. An event
            # without a time cannot be grouped at all.
            self._position = change["_id"]
            return [*released, change]
        self._group.append(change)
        return released

    def idle(self, stream_token: Any) -> list[Mapping[str, Any]]:
        """The stream answered with nothing: the held group is complete, release it.

        ``stream_token`` is the stream's resume token now (its post-batch token),
        past every event read; it becomes the position even when nothing was held,
        so an idle stream's advancing token is checkpointed.
        """
        return self._release(stream_token)

    def _release(self, position: Any) -> list[Mapping[str, Any]]:
        group, self._group = self._group, []
        if position is not None:
            self._position = position
        folded = fold(group)
        self.folded += len(group) - len(folded)
        return folded


def fold(group: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Keep only the last data event of each document; other events stay as they are.

    The last event carries the document's state at the end of the transaction
    (insert+update: the update, whose looked-up document is the newest; insert+delete:
    the delete; delete+insert: the insert). Order is kept, each survivor at its place.
    Events without a usable key (an update of a vanished document on the stand-in, a
    keyless delete) are never folded: the tailer decides what they mean.
    """
    if len(group) < 2:
        return group
    seen: set[bytes] = set()
    kept: list[Mapping[str, Any]] = []
    for change in reversed(group):
        key = _key(change)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(change)
    kept.reverse()
    return kept


def _key(change: Mapping[str, Any]) -> bytes | None:
    if change.get("operationType") not in _DATA_OPS:
        return None
    try:
        key, _ = events.change_key(change)
    except EnvelopeError:
        return None
    return key
