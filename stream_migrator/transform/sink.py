"""Version-guarded, idempotent writes to the target collection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bson.int64 import Int64
from pymongo import DeleteOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect, BulkWriteError, ExecutionTimeout, PyMongoError

from stream_migrator.errors import FatalError, RetryableError
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.spec import META_FIELD

_DUPLICATE_KEY = 11000
#: Write-error codes that a retry can fix (the rest are data problems -> quarantine).
_TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64, 50}


def coalesce(writes: Sequence[TargetWrite]) -> tuple[list[TargetWrite], int]:
    """Keep only the newest write per document.

    Why: an unordered bulk may run two writes of one _id in any order, and a delete
    run before an older upsert would let the upsert resurrect the document. One
    write per _id per batch makes order irrelevant; the version guard does the rest.
    """
    newest: dict[Any, TargetWrite] = {}
    for w in writes:
        key = _hashable(w.doc_id)
        current = newest.get(key)
        if current is None or w.version >= current.version:
            newest[key] = w
    return list(newest.values()), len(writes) - len(newest)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


class MongoSink:
    """Applies writes as one unordered ``bulk_write``; an older version never overwrites a newer."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self._coll = collection

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        batch, coalesced = coalesce(writes)
        result = ApplyResult(coalesced=coalesced)
        if not batch:
            return result
        ops: list[Any] = []
        for w in batch:
            # The guard: match only a target document older than this event. If a newer
            # (or the same) version is there, the filter misses, the upsert tries to insert
            # the same _id, and the server answers duplicate key 11000 = "stale, skip".
            guard = {"_id": w.doc_id, f"{META_FIELD}.v": {"$lt": Int64(w.version)}}
            if w.document is None:
                ops.append(DeleteOne(guard))
            else:
                doc = dict(w.document)
                doc["_id"] = w.doc_id
                doc[META_FIELD] = {"v": Int64(w.version)}
                ops.append(ReplaceOne(guard, doc, upsert=True))
        deletes = sum(1 for w in batch if w.document is None)
        try:
            outcome = self._coll.bulk_write(ops, ordered=False)
            # A guarded delete that matched nothing met a newer version (or no document).
            result.stale = deletes - outcome.deleted_count
            result.written = len(ops) - result.stale
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            transient = [e for e in errors if e.get("code") in _TRANSIENT_CODES]
            if transient:
                raise RetryableError(
                    f"target write failed transiently ({transient[0].get('errmsg')})",
                    retry_after=1.0,
                    code=transient[0].get("code"),
                ) from exc
            for err in errors:
                if err.get("code") == _DUPLICATE_KEY:
                    result.stale += 1
                else:
                    result.failed.append(
                        (batch[err["index"]], f"code {err.get('code')}: {err.get('errmsg')}")
                    )
            stale_deletes = deletes - int(exc.details.get("nRemoved", 0))
            result.stale += stale_deletes
            result.written = len(ops) - len(errors) - stale_deletes
        except (AutoReconnect, ExecutionTimeout) as exc:
            raise RetryableError(f"target unavailable: {exc}", retry_after=1.0) from exc
        except PyMongoError as exc:
            code = getattr(exc, "code", None)
            if getattr(exc, "has_error_label", lambda _l: False)("RetryableWriteError"):
                raise RetryableError(f"target write failed: {exc}", code=code) from exc
            raise FatalError(f"target write failed: {exc}", code=code) from exc
        return result
