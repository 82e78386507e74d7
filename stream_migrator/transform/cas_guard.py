"""The ``cas`` version guard, for servers that cannot use an index for the ``filter`` guard.

mongo-java-server uses an index only when a filter names exactly that index's
fields with plain values, so ``{_id, _sm.v: {$not: {$gte: v}}}`` scans the whole
collection per write. Instead: one indexed ``$in`` read of the current versions,
stale writes dropped, then a compare-and-set on the version that was read:
``{_id, _sm.v: <as read>}`` for replaces and deletes (found through the unique
index ``sm_cas`` on ``(_id, _sm.v)``), a plain insert for an id that was absent.
A write that misses because someone (an application on the new path, a zombie
worker) changed the document in between is read and decided again, so an
application write landing between the read and the write is never overwritten by
an older version. Each write command of the stand-in holds its collection's lock,
so every write is atomic per document, as with ``filter`` on MongoDB.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError

from stream_migrator.errors import RetryableError
from stream_migrator.events import META_FIELD, hashable_id
from stream_migrator.interfaces import ApplyResult, TargetWrite
from stream_migrator.observability import get_logger
from stream_migrator.transform.target_docs import comparable, same_content, stamped
from stream_migrator.transform.write_errors import (
    CAS_INDEX,
    is_id_race,
    translate,
    write_error_reason,
    write_errors,
)

log = get_logger("sink")
#: Rounds of "read versions, compare-and-set" before a batch is handed back as retryable.
_CAS_ROUNDS = 8


class CasGuard:
    """Applies a coalesced batch by compare-and-set on the versions read just before."""

    def __init__(
        self, coll: Collection[dict[str, Any]], *, skip_equal: bool, mark_echoes: bool
    ) -> None:
        self._coll = coll
        self.skip_equal = skip_equal
        self.mark_echoes = mark_echoes
        self._cas_index_ready = False

    def apply(self, batch: list[TargetWrite], result: ApplyResult) -> None:
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
                number = comparable(version)  # no (or a non-number) version = older
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
            raise translate(exc) from exc
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
                same = wanted is not None and same_content(doc, wanted.get(key))
                current[key] = (version, same)
        except PyMongoError as exc:
            raise translate(exc) from exc
        return current

    def _bulk_cas(
        self, todo: list[TargetWrite], expected: list[_CasExpect], result: ApplyResult
    ) -> list[TargetWrite]:
        """One unordered bulk of compare-and-set writes; returns the writes that lost a race."""
        ops: list[Any] = []
        for w, exp in zip(todo, expected, strict=True):
            if not exp.present:
                ops.append(
                    InsertOne(stamped(w, mark=self.mark_echoes))
                )  # 11000 if someone inserted first
                continue
            # The version exactly as read (None also matches a missing _sm.v).
            cas = {"_id": w.doc_id, f"{META_FIELD}.v": exp.version}
            ops.append(
                DeleteOne(cas)
                if w.document is None
                else ReplaceOne(cas, stamped(w, mark=self.mark_echoes))
            )
        errors: list[dict[str, Any]] = []
        try:
            outcome = self._coll.bulk_write(ops, ordered=False)
            hits = outcome.matched_count + outcome.deleted_count
        except BulkWriteError as exc:
            errors = write_errors(exc)
            hits = int(exc.details.get("nMatched", 0)) + int(exc.details.get("nRemoved", 0))
        except PyMongoError as exc:
            raise translate(exc) from exc
        errored = {e["index"] for e in errors}
        # Only a duplicate _id (an insert that met a document someone else inserted)
        # lost a race; a duplicate on another unique index is a real conflict.
        lost = [todo[e["index"]] for e in errors if is_id_race(e)]
        result.failed.extend(
            (todo[e["index"]], write_error_reason(e)) for e in errors if not is_id_race(e)
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


class _CasExpect(NamedTuple):
    """What the compare-and-set expects: was the document there, and at which version.

    A NamedTuple, not a frozen dataclass: one is built per write, and a frozen
    dataclass's __init__ costs several times as much.
    """

    present: bool
    version: Any  # the _sm.v exactly as read (None when missing)
