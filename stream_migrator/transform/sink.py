"""Version-guarded, idempotent writes to the target collection."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from pymongo import DeleteOne, InsertOne, MongoClient, ReadPreference, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)

from stream_migrator.errors import FatalError, RetryableError
from stream_migrator.events import META_FIELD, hashable_id
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.mongo import majority_writes
from stream_migrator.observability import get_logger
from stream_migrator.reconcile.canonical import doc_hash

log = get_logger("sink")
_DUPLICATE_KEY = 11000
TOMBSTONE_SUFFIX = "sm_tombstones"
#: Write-error codes that a retry can fix (the rest are data problems -> quarantine).
_TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64, 50}
#: The index a duplicate key error names in its message (``... index: <name> dup key: ...``).
_DUP_INDEX = re.compile(r"index: (.+?) dup key")
_DUP_KEY = re.compile(r"dup key: (.*)$")


def coalesce(writes: Sequence[TargetWrite]) -> tuple[list[TargetWrite], int]:
    """Keep only the newest write per document.

    Why: an unordered bulk may run two writes of one _id in any order, and a delete
    run before an older upsert would let the upsert resurrect the document. One
    write per _id per batch makes order irrelevant; the version guard does the rest.
    """
    newest: dict[Any, TargetWrite] = {}
    for w in writes:
        key = hashable_id(w.doc_id)
        current = newest.get(key)
        if current is None or w.version >= current.version:
            newest[key] = w
    return list(newest.values()), len(writes) - len(newest)


GuardMode = Literal["filter", "cas"]
#: The index that lets mongo-java-server find ``{_id, _sm.v: <exact>}`` without a scan.
CAS_INDEX = "sm_cas"
#: Rounds of "read versions, compare-and-set" before a batch is handed back as retryable.
_CAS_ROUNDS = 8


def detect_guard_mode(client: MongoClient[dict[str, Any]]) -> GuardMode:
    """``filter`` on MongoDB; ``cas`` on mongo-java-server.

    mongo-java-server answers ``buildInfo`` without ``gitVersion`` and uses an index
    only when the filter names exactly that index's fields with plain values, so
    the guarded filter ``{_id, _sm.v: {$not: {$gte: v}}}`` scans the whole collection for
    every write (measured with the earlier ``$lt`` guard: 500 guarded upserts into
    20,000 documents take 3.6 s, against 0.011 s by _id alone).
    """
    info = client.admin.command("buildInfo")
    return "filter" if "gitVersion" in info else "cas"


class MongoSink:
    """Applies writes as one unordered ``bulk_write``; an older version never overwrites a newer.

    Two ways to enforce the guard, both atomic per document on the server:

    - ``filter`` (MongoDB): the version test is part of each write's filter,
      ``{_id, _sm.v: {$not: {$gte: v}}}`` (a missing version is older); a miss on an
      upsert is duplicate key 11000 on ``_id`` = stale (sent once more first, in case it
      raced another writer's insert). A duplicate on another unique index is a failure.
    - ``cas`` (mongo-java-server, which cannot use an index for that filter): one
      indexed ``$in`` read of the current versions, stale writes dropped, then a
      compare-and-set on the version that was read: ``{_id, _sm.v: <as read>}`` for
      replaces and deletes (found through the unique index ``sm_cas`` on
      ``(_id, _sm.v)``), a plain insert for an id that was absent. A write that
      misses because someone (an application on the new path, a zombie worker)
      changed the document in between is read and decided again, so an
      application write landing between the read and the write is never
      overwritten by an older version.
    """

    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        guard: GuardMode = "filter",
        *,
        skip_equal: bool = False,
        mark_echoes: bool = False,
    ) -> None:
        # Every read here decides a write (versions, tombstones, skip_equal content), so it
        # goes to the primary whatever the URI's read preference: a lagging secondary would
        # show an older state, and skip_equal would skip a needed write or a missed
        # tombstone let a late insert resurrect a deleted document.
        # Every write waits for a majority, whatever the URI asks: a batch's offsets are
        # committed once its writes are acknowledged, so a write a failover can roll back
        # (w=1) would be a lost change.
        self._coll = collection.with_options(
            read_preference=ReadPreference.PRIMARY, write_concern=majority_writes(collection)
        )
        # mark_echoes: each document written carries _sm.echo = the hash of its content,
        # so the stream that captures this collection can tell "exactly what this sink
        # wrote" (an echo, not carried back) from a later change by an application.
        self.mark_echoes = mark_echoes
        # skip_equal: an upsert whose target already holds the same content (ignoring
        # _sm) is skipped and counted stale. Why: with a forward and a reverse stream
        # both running, an echo then causes no change event, so ping-pong stops.
        self.skip_equal = skip_equal
        # Tombstones live beside the target, not in it, so readers of the target
        # never see them: <target>.sm_tombstones {_id, v, at}.
        self.tombstones: Collection[dict[str, Any]] = collection.database.get_collection(
            f"{collection.name}.{TOMBSTONE_SUFFIX}",
            read_preference=ReadPreference.PRIMARY,
            write_concern=majority_writes(collection),
        )
        self.guard = guard
        self._cas_index_ready = False

    def apply(self, writes: Sequence[TargetWrite]) -> ApplyResult:
        batch, coalesced = coalesce(writes)
        # After coalescing, so the newest change of a document decides: an echo (the
        # other stream's own write seen again) is not written back.
        mine = [w for w in batch if not w.echo]
        result = ApplyResult(coalesced=coalesced, echoes=len(batch) - len(mine))
        batch = mine
        batch = self._drop_buried(batch, result)
        if not batch:
            return result
        deletes = [w for w in batch if w.document is None]
        if deletes:
            # Tombstone first: if we crash between the two writes, the replay redoes
            # both; the other order could let a replayed insert resurrect the document.
            self._bury(deletes)
        if self.guard == "filter":
            if self.skip_equal:
                batch = self._drop_equal(batch, result)
            raced = self._bulk([self._filter_guarded(w) for w in batch], batch, result)
            if raced:
                # A duplicate _id means a document with this _id was there when the
                # upsert inserted, yet its filter found none older: it holds a version >=
                # ours (stale), or another writer (a zombie worker) inserted it between
                # the server's match and insert, maybe an older one. Sent once more, the
                # guard sees that document: replaced if older, duplicate again = stale.
                again = self._bulk([self._filter_guarded(w) for w in raced], raced, result)
                result.stale += len(again)
        else:
            self._apply_cas(batch, result)
        return result

    def _drop_buried(self, batch: list[TargetWrite], result: ApplyResult) -> list[TargetWrite]:
        """Drop writes older than a buried delete of their _id (upserts: or as old as it).

        A delete of the tombstone's own version is kept: the tombstone is written
        before the delete, so a crash between the two leaves a tombstone whose delete
        never ran, and the replay must run it (it is version-guarded, so idempotent).
        """
        if not batch:
            return batch
        try:
            buried = {
                hashable_id(t["_id"]): t.get("v", 0)
                for t in self.tombstones.find({"_id": {"$in": [w.doc_id for w in batch]}})
            }
        except PyMongoError as exc:
            raise _translate(exc) from exc
        if not buried:
            return batch
        alive = [w for w in batch if not _buried_by(buried.get(hashable_id(w.doc_id)), w)]
        result.stale += len(batch) - len(alive)
        return alive

    def _bury(self, deletes: list[TargetWrite]) -> None:
        now = dt.datetime.now(dt.UTC)
        ops = [
            UpdateOne(
                {"_id": w.doc_id},
                {"$max": {"v": Int64(w.version)}, "$set": {"at": now}},
                upsert=True,
            )
            for w in deletes
        ]
        try:
            self.tombstones.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if _write_errors(exc):  # raises RetryableError on a write-concern failure
                raise _translate(exc) from exc
        except PyMongoError as exc:
            raise _translate(exc) from exc

    def purge_tombstones(self, retention_s: float) -> int:
        """Forget deletes older than the retention window; returns how many were purged.

        After the window a replay older than the delete is no longer expected (the
        topic's own retention should be shorter), so the tombstone has done its job.
        """
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=retention_s)
        try:
            return self.tombstones.delete_many({"at": {"$lt": cutoff}}).deleted_count
        except PyMongoError as exc:
            raise _translate(exc) from exc

    def _drop_equal(self, batch: list[TargetWrite], result: ApplyResult) -> list[TargetWrite]:
        """Filter mode with skip_equal: one ``$in`` read, upserts of identical content dropped."""
        upserts = {hashable_id(w.doc_id): w for w in batch if w.document is not None}
        if not upserts:
            return batch
        try:
            same = {
                hashable_id(doc["_id"])
                for doc in self._coll.find({"_id": {"$in": [w.doc_id for w in upserts.values()]}})
                if _same_content(doc, upserts.get(hashable_id(doc["_id"])))
            }
        except PyMongoError as exc:
            raise _translate(exc) from exc
        result.stale += len(same)
        return [w for w in batch if w.document is None or hashable_id(w.doc_id) not in same]

    def _filter_guarded(self, w: TargetWrite) -> Any:
        # The guard: match only a target document older than this event. If a newer
        # (or the same) version is there, the filter misses, the upsert tries to insert
        # the same _id, and the server answers duplicate key 11000 on _id = "stale, skip".
        # "Older" includes "no version": on MongoDB ``{$lt: v}`` never matches a missing
        # _sm.v (an application's document, or one an unstamped write replaced), while
        # ``$not: {$gte: v}`` does (and a null or non-number _sm.v), as cas mode decides.
        guard = self._guard_filter(w)
        if w.document is None:
            return DeleteOne(guard)
        return ReplaceOne(guard, _stamped(w, mark=self.mark_echoes), upsert=True)

    def _guard_filter(self, w: TargetWrite) -> dict[str, Any]:
        """``w``'s document, if it is older than ``w`` (or has no version)."""
        return {"_id": w.doc_id, f"{META_FIELD}.v": {"$not": {"$gte": Int64(w.version)}}}

    def _apply_cas(self, batch: list[TargetWrite], result: ApplyResult) -> None:
        """Read versions, compare-and-set; the writes that lost a race are decided again."""
        self._ensure_cas_index()
        pending = batch
        for _ in range(_CAS_ROUNDS):
            current = self._current(pending)
            todo: list[TargetWrite] = []
            expected: list[Any] = []
            for w in pending:
                key = hashable_id(w.doc_id)
                present = key in current
                version, same = current.get(key, (None, False))
                number = _comparable(version)  # no (or a non-number) version = older
                if (
                    (number is not None and number >= w.version)
                    or (w.document is None and not present)
                    or same
                ):
                    result.stale += 1
                    continue
                todo.append(w)
                expected.append(_CasExpect(present, version))
            if not todo:
                return
            pending = self._bulk_cas(todo, expected, result)
            if not pending:
                return
            log.info("sink.cas_retry", lost=len(pending))
        raise RetryableError(
            f"{len(pending)} target documents changed under every compare-and-set "
            f"in {_CAS_ROUNDS} rounds (is another writer rewriting them without a newer "
            f"{META_FIELD}.v?)",
            retry_after=1.0,
        )

    def _ensure_cas_index(self) -> None:
        if self._cas_index_ready:
            return
        try:
            self._coll.create_index(
                [("_id", 1), (f"{META_FIELD}.v", 1)], unique=True, name=CAS_INDEX
            )
        except PyMongoError as exc:
            raise _translate(exc) from exc
        self._cas_index_ready = True

    def _current(self, batch: list[TargetWrite]) -> dict[Any, tuple[Any, bool]]:
        """_id -> (its _sm.v as stored, None if absent; whether an upsert would leave it as is)."""
        # Only skip_equal compares content: the others read just the version.
        wanted = {hashable_id(w.doc_id): w for w in batch} if self.skip_equal else None
        projection = None if wanted is not None else {f"{META_FIELD}.v": 1}
        current: dict[Any, tuple[Any, bool]] = {}
        try:
            for doc in self._coll.find({"_id": {"$in": [w.doc_id for w in batch]}}, projection):
                key = hashable_id(doc["_id"])
                meta = doc.get(META_FIELD)
                version = meta.get("v") if isinstance(meta, dict) else None
                same = wanted is not None and _same_content(doc, wanted.get(key))
                current[key] = (version, same)
        except PyMongoError as exc:
            raise _translate(exc) from exc
        return current

    def _bulk_cas(
        self, todo: list[TargetWrite], expected: list[_CasExpect], result: ApplyResult
    ) -> list[TargetWrite]:
        """One unordered bulk of compare-and-set writes; returns the writes that lost a race."""
        ops: list[Any] = []
        for w, exp in zip(todo, expected, strict=True):
            if not exp.present:
                ops.append(
                    InsertOne(_stamped(w, mark=self.mark_echoes))
                )  # 11000 if someone inserted first
                continue
            # The version exactly as read (None also matches a missing _sm.v).
            cas = {"_id": w.doc_id, f"{META_FIELD}.v": exp.version}
            ops.append(
                DeleteOne(cas)
                if w.document is None
                else ReplaceOne(cas, _stamped(w, mark=self.mark_echoes))
            )
        errors: list[dict[str, Any]] = []
        try:
            outcome = self._coll.bulk_write(ops, ordered=False)
            hits = outcome.matched_count + outcome.deleted_count
        except BulkWriteError as exc:
            errors = _write_errors(exc)
            hits = int(exc.details.get("nMatched", 0)) + int(exc.details.get("nRemoved", 0))
        except PyMongoError as exc:
            raise _translate(exc) from exc
        errored = {e["index"] for e in errors}
        # Only a duplicate _id (an insert that met a document someone else inserted)
        # lost a race; a duplicate on another unique index is a real conflict.
        lost = [todo[e["index"]] for e in errors if _is_id_race(e)]
        result.failed.extend(
            (todo[e["index"]], _write_error_reason(e)) for e in errors if not _is_id_race(e)
        )
        conditional = [
            w
            for i, (w, exp) in enumerate(zip(todo, expected, strict=True))
            if exp.present and i not in errored
        ]
        missed = self._missed(conditional) if hits < len(conditional) else []
        result.written += len(ops) - len(errors) - len(missed)
        return lost + missed

    def _missed(self, conditional: list[TargetWrite]) -> list[TargetWrite]:
        """Of these compare-and-sets, the ones whose effect the target does not show."""
        now = self._current(conditional)
        missed = []
        for w in conditional:
            version, _ = now.get(hashable_id(w.doc_id), (None, False))
            landed = (
                (hashable_id(w.doc_id) not in now) if w.document is None else version == w.version
            )
            if not landed:
                missed.append(w)
        return missed

    def _bulk(
        self, ops: list[Any], batch: list[TargetWrite], result: ApplyResult
    ) -> list[TargetWrite]:
        """One unordered bulk of filter-guarded writes (``ops[i]`` is ``batch[i]``'s write).

        Returns the upserts that failed duplicate key on _id (the caller decides them).
        """
        if not ops:
            return []
        errors: list[dict[str, Any]] = []
        try:
            outcome = self._coll.bulk_write(ops, ordered=False)
            removed = outcome.deleted_count
        except BulkWriteError as exc:
            errors = _write_errors(exc)  # raises RetryableError on a write-concern failure
            removed = int(exc.details.get("nRemoved", 0))
        except PyMongoError as exc:
            raise _translate(exc) from exc
        raced = [batch[e["index"]] for e in errors if _is_id_race(e)]
        result.failed.extend(
            (batch[e["index"]], _write_error_reason(e)) for e in errors if not _is_id_race(e)
        )
        errored = {e["index"] for e in errors}
        # A guarded delete that matched nothing met a newer version (or no document).
        sent_deletes = sum(
            1 for i, w in enumerate(batch) if w.document is None and i not in errored
        )
        stale_deletes = sent_deletes - removed
        result.stale += stale_deletes
        result.written += len(ops) - len(errors) - stale_deletes
        return raced


def _buried_by(tombstone_version: int | None, w: TargetWrite) -> bool:
    """True when a tombstone at ``tombstone_version`` makes ``w`` stale."""
    if tombstone_version is None:
        return False
    if w.document is None:
        return tombstone_version > w.version  # the same delete again: run it (again)
    return tombstone_version >= w.version


def _write_errors(exc: BulkWriteError) -> list[dict[str, Any]]:
    """The bulk's per-write errors; raises RetryableError if a retry can fix the batch.

    That is: any write-concern error (the writes ran on the primary but may be rolled
    back on failover, so they must not count as written nor let offsets be committed;
    the retry is safe because every write is version-guarded), or a transient write error.
    """
    concern = _write_concern_failure(exc)
    if concern is not None:
        raise concern from exc
    errors: list[dict[str, Any]] = exc.details.get("writeErrors", [])
    transient = [e for e in errors if e.get("code") in _TRANSIENT_CODES]
    if transient:
        raise RetryableError(
            f"target write failed transiently ({transient[0].get('errmsg')})",
            retry_after=1.0,
            code=transient[0].get("code"),
        ) from exc
    return errors


def _write_concern_failure(exc: BulkWriteError) -> RetryableError | None:
    """The RetryableError for a bulk whose ``writeConcernErrors`` is not empty, else None."""
    concern: list[dict[str, Any]] = exc.details.get("writeConcernErrors") or []
    if not concern:
        return None
    first = concern[0]
    return RetryableError(
        f"target write was not acknowledged by its write concern (code {first.get('code')} "
        f"{first.get('codeName', '')}: {first.get('errmsg')}); it may be rolled back on "
        "failover, so the batch is retried and no offset is committed. If this persists, "
        "check the replica set's members and the URI's w / wtimeoutMS",
        retry_after=1.0,
        code=first.get("code"),
    )


def _is_id_race(err: Mapping[str, Any]) -> bool:
    """True when a write error is a duplicate key on ``_id`` (or ``sm_cas``): a lost race.

    MongoDB names the index in ``keyPattern`` (``{"_id": 1}``); servers without it
    (mongo-java-server) are judged by the index name in ``errmsg`` (``index: _id_``).
    A duplicate on any other unique index is a real conflict, not a stale write.
    """
    if err.get("code") != _DUPLICATE_KEY:
        return False
    pattern = err.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        return list(pattern) in (["_id"], ["_id", f"{META_FIELD}.v"])
    found = _DUP_INDEX.search(str(err.get("errmsg", "")))
    return found is not None and found.group(1) in ("_id_", CAS_INDEX)


def _duplicate_reason(err: Mapping[str, Any]) -> str:
    """Why a write hit a duplicate key on a unique index other than ``_id``, and what to do."""
    msg = str(err.get("errmsg", ""))
    index = _DUP_INDEX.search(msg)
    pattern = err.get("keyPattern")
    name = index.group(1) if index else (dict(pattern) if pattern else "an unnamed index")
    key_value = err.get("keyValue")
    dup = _DUP_KEY.search(msg)
    key = key_value if key_value is not None else (dup.group(1) if dup else "unknown key")
    return (
        f"duplicate key on unique index {name} of the target, key {key}: another target "
        "document already holds this value (code 11000). Resolve the conflict in the data "
        "(or drop the index), then run `stream-migrator quarantine replay`"
    )


def _write_error_reason(err: Mapping[str, Any]) -> str:
    """The quarantine reason of one failed write."""
    if err.get("code") == _DUPLICATE_KEY:
        return _duplicate_reason(err)
    return f"code {err.get('code')}: {err.get('errmsg')}"


def _comparable(version: Any) -> int | float | Decimal | None:
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


def _same_content(current: dict[str, Any], w: TargetWrite | None) -> bool:
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


def _translate(exc: PyMongoError) -> RetryableError | FatalError:
    """Driver error -> our error, keeping the code; transient ones become retryable."""
    code = getattr(exc, "code", None)
    if isinstance(exc, AutoReconnect | ExecutionTimeout):
        return RetryableError(f"target unavailable: {exc}", retry_after=1.0, code=code)
    if isinstance(exc, WriteConcernError):
        # Applied on the primary, not acknowledged as asked: retry (writes are idempotent).
        return RetryableError(
            f"target write was not acknowledged by its write concern: {exc}; retrying",
            code=code,
        )
    if isinstance(exc, BulkWriteError):
        concern = _write_concern_failure(exc)
        if concern is not None:
            return concern
        errors = exc.details.get("writeErrors", [])
        if errors and all(e.get("code") in _TRANSIENT_CODES for e in errors):
            return RetryableError(f"target write failed transiently: {exc}", code=code)
    if exc.has_error_label("RetryableWriteError") or code in _TRANSIENT_CODES:
        return RetryableError(f"target write failed: {exc}", code=code)
    return FatalError(f"target write failed: {exc}", code=code)


class _CasExpect(NamedTuple):
    """What the compare-and-set expects: was the document there, and at which version.

    A NamedTuple, not a frozen dataclass: one is built per write, and a frozen
    dataclass's __init__ costs several times as much.
    """

    present: bool
    version: Any  # the _sm.v exactly as read (None when missing)


def _stamped(w: TargetWrite, *, mark: bool = False) -> dict[str, Any]:
    doc = dict(w.document or {})
    doc["_id"] = w.doc_id
    meta: dict[str, Any] = {"v": Int64(w.version)}
    if mark:
        meta["echo"] = echo_mark(doc)
    doc[META_FIELD] = meta
    return doc


def echo_mark(doc: dict[str, Any]) -> bytes:
    """The content hash a marking sink stores in ``_sm.echo`` (``_sm`` and key order ignored)."""
    return doc_hash(doc)


def is_marked_echo(doc: dict[str, Any] | None) -> bool:
    """True when ``doc`` is exactly what a marking sink wrote (nobody changed it since)."""
    meta = (doc or {}).get(META_FIELD)
    mark = meta.get("echo") if isinstance(meta, dict) else None
    return isinstance(mark, bytes) and doc is not None and mark == echo_mark(doc)
