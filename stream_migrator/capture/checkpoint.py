"""Capture checkpoints in the ``stream_migrator`` metadata database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection

from stream_migrator.mongo import on_primary


class MongoCheckpointStore:
    """One document per migration in ``<metadata_db>.checkpoints``.

    Fields: ``start_at`` (stream position taken before the snapshot), ``snapshot``
    (``{done, last_id, read_at}`` for a one-range copy; ``{done, read_at, ranges:
    [{lo, hi, last_id, has_last, done, copied}]}`` for a parallel one, see
    :mod:`stream_migrator.capture.snapshot`), ``resume_token``, ``stopped`` (why the
    stream ended, when it did) and ``updated_at``.

    Read and written on the primary with majority concern whatever the URI's read
    preference: a checkpoint read from a lagging secondary resumes from an older
    position (replays) or misses one just saved, and one acknowledged by the primary
    alone can roll back on failover.
    """

    def __init__(self, client: MongoClient[dict[str, Any]], db: str, migration: str) -> None:
        self._coll = on_primary(client[db]["checkpoints"])
        self._id = f"{migration}/capture"

    @property
    def collection(self) -> Collection[dict[str, Any]]:
        """The checkpoint collection as this store reads and writes it."""
        return self._coll

    def load(self) -> dict[str, Any] | None:
        return self._coll.find_one({"_id": self._id})

    def save(self, **fields: Any) -> None:
        fields["updated_at"] = dt.datetime.now(dt.UTC)
        self._coll.update_one({"_id": self._id}, {"$set": fields}, upsert=True)

    def replace(self, **fields: Any) -> None:
        """Overwrite the whole checkpoint (operator actions), dropping every other field."""
        fields["updated_at"] = dt.datetime.now(dt.UTC)
        self._coll.replace_one({"_id": self._id}, fields, upsert=True)

    def clear(self) -> None:
        self._coll.delete_one({"_id": self._id})
