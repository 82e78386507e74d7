"""The audit trail: ``<metadata_db>.audit``, append-only.

Every state change, fence breach, repair, quarantine replay and operator action
is one inserted document. This module only ever inserts and reads: nothing in
the audit collection is updated or deleted.
"""

from __future__ import annotations

import datetime as dt
import getpass
import threading
import time
from typing import Any

from bson.int64 import Int64
from pymongo import ASCENDING, MongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from stream_migrator.errors import RetryableError

AUDIT_COLLECTION = "audit"


class _Sequence:
    """A wall-clock nanosecond stamp, strictly increasing within this process.

    Why: a BSON datetime holds milliseconds, and one controller writes several
    entries within one millisecond. ``entries`` orders by ``at`` then ``seq``, so
    the trail reads back in the order it was appended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def __call__(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


next_seq = _Sequence()


def operator_identity(explicit: str | None = None) -> str:
    """--operator or SM_OPERATOR (from the settings), else the OS user (never user@host)."""
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(
    client: MongoClient[dict[str, Any]],
    metadata_db: str,
    *,
    migration: str,
    action: str,
    operator: str,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str = "",
    details: dict[str, Any] | None = None,
    entry_id: str | None = None,
    at: dt.datetime | None = None,
    seq: int | None = None,
) -> dict[str, Any]:
    """Append one audit entry and return it.

    ``action`` is a short verb (``advance``, ``halt``, ``fence_breach``, ``repair``,
    ``quarantine_replay``, ...); ``details`` carries affected document versions or
    counts. ``entry_id`` makes the append idempotent: a second append of the same id
    (a transition re-recorded after a crash) is the entry already there. Raises
    RetryableError when MongoDB cannot take the write: an action that cannot be
    audited should not be reported as done.
    """
    entry: dict[str, Any] = {
        "at": at or dt.datetime.now(dt.UTC),
        "seq": Int64(seq if seq is not None else next_seq()),
        "migration": migration,
        "action": action,
        "operator": operator,
        "from": from_state,
        "to": to_state,
        "reason": reason,
        "details": details or {},
    }
    if entry_id is not None:
        entry["_id"] = entry_id
    try:
        client[metadata_db][AUDIT_COLLECTION].insert_one(entry)
    except DuplicateKeyError:
        if entry_id is None:
            raise
    except PyMongoError as exc:
        raise RetryableError(
            f"cannot append to the audit trail {metadata_db}.{AUDIT_COLLECTION}: {exc}"
        ) from exc
    return entry


def entries(
    client: MongoClient[dict[str, Any]], metadata_db: str, migration: str
) -> list[dict[str, Any]]:
    """Every audit entry of ``migration``, in the order they were appended."""
    cursor = (
        client[metadata_db][AUDIT_COLLECTION]
        .find({"migration": migration})
        .sort([("at", ASCENDING), ("seq", ASCENDING), ("_id", ASCENDING)])
    )
    return list(cursor)
