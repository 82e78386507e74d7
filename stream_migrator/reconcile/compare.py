"""The one compare of transform(source) against a target, used by every verdict.

:func:`expect` says what the target should hold for a source document (the
migrated copy, nothing because the spec filters it out, or nothing because the
spec rejects it: then it is in quarantine). :func:`classify` compares that with
the target copy, by the canonical encoding of ``canonical.py`` (BSON types kept,
field order and ``_sm`` ignored, NaN equal to itself as BSON stores it). The
reconciler (``engine.py``, bucketed and resumable) and :func:`full_compare` (for
the rollback verification, the simple gate, the demo and the ``compare``
command) both use them, and both pair documents by ``_id`` in
``stream_migrator.id_order``'s order (:func:`merge_join`), so they cannot
disagree about a document.

Both read with :func:`read_sorted`: raw batches fetched by a thread ahead of the
caller, the target kept undecoded (:class:`StoredDoc`), so a target copy that is
byte for byte the migrated document, ``_sm`` aside (:func:`agrees_exactly`, the
usual case: the worker writes exactly what ``migrate`` returns) costs one
``bson.encode`` and no canonical encoding. Any other copy is decoded and
classified canonically.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions, TypeRegistry
from bson.int64 import Int64
from pymongo.collection import Collection

from stream_migrator import events
from stream_migrator.canonical import doc_hash
from stream_migrator.errors import TransformError
from stream_migrator.id_order import id_before
from stream_migrator.mongo import on_primary
from stream_migrator.reconcile.canonical import FieldDiff, diff_docs
from stream_migrator.spec import META_FIELD, MigrationSpec

#: Most untransformable documents a :class:`CompareReport` names.
MAX_NAMED = 10


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the target should hold for one source document.

    ``doc`` is the migrated copy, or None when no target copy is expected: the
    spec's filter excludes the document (``filtered``), or the spec or the target
    schema rejects it (``rejected`` holds the reason; the document is in quarantine).
    """

    doc: dict[str, Any] | None
    filtered: bool = False
    rejected: str | None = None


def expect(spec: MigrationSpec, doc: dict[str, Any]) -> Expectation:
    """``spec.migrate(doc)`` (transform + target schema, as the worker writes it), classified."""
    try:
        target = spec.migrate(doc)
    except TransformError as exc:
        return Expectation(None, rejected=str(exc))
    return Expectation(None, filtered=True) if target is None else Expectation(target)


@dataclass(frozen=True, slots=True)
class Difference:
    """Why a document blocks: ``kind`` is ``missing``, ``orphan``, ``type``, ``value`` or
    ``untransformable`` (then ``reason`` is the spec's error)."""

    kind: str
    diffs: list[FieldDiff] = field(default_factory=list)
    reason: str | None = None


def agrees_exactly(expected: Expectation, t_doc: StoredDoc) -> bool:
    """The target copy is byte for byte the BSON of the migrated document, ``_sm`` aside.

    That is, its bytes are the migrated document's, or its elements followed by
    one ``_sm`` document (where the worker puts it). Identical encodings decode to
    identical documents, so their canonical encodings (which drop ``_sm``) are
    equal too: this proves agreement without computing them. False proves
    nothing (another key order, ``_sm`` elsewhere): :func:`classify` decides.
    """
    if expected.doc is None:
        return False
    encoded, body = bson.encode(expected.doc), t_doc.body
    if encoded == body:
        return True
    end = len(encoded) - 1  # where the migrated document's elements end: an element boundary
    if not (body.startswith(_META_ELEMENT, end) and body.startswith(encoded[4:end], 4)):
        return False
    at = end + len(_META_ELEMENT)
    return at + int.from_bytes(body[at : at + 4], "little") == len(body) - 1  # _sm is last


#: The head of a ``_sm`` element holding a document (type 3, its name, NUL).
_META_ELEMENT = b"\x03" + META_FIELD.encode() + b"\x00"


def classify(expected: Expectation | None, t_doc: dict[str, Any] | None) -> Difference | None:
    """None when the target agrees with the source's expectation, else the difference.

    ``expected`` None = no source document. An untransformable source never
    agrees with anything: until the spec or the document is fixed and the
    quarantine replayed, the target cannot be proven current for it.
    """
    if expected is None or expected.filtered:
        return None if t_doc is None else Difference("orphan")
    if expected.rejected is not None:
        return Difference("untransformable", reason=expected.rejected)
    assert expected.doc is not None
    if t_doc is None:
        return Difference("missing")
    if doc_hash(expected.doc) == doc_hash(t_doc):
        return None
    # Unequal canonical hashes are the definition of "different"; the diff explains it.
    diffs = diff_docs(expected.doc, t_doc)
    kind = "type" if any(d.reason == "type" for d in diffs) else "value"
    return Difference(kind, diffs)


@dataclass
class CompareReport:
    """Outcome of a full compare; ``mismatches`` = missing + extra + different.

    ``untransformable`` source documents are not mismatches but they block every
    verdict (``blocked``); ``rejected`` names the first :data:`MAX_NAMED` of them
    as ``(_id, reason)``.
    """

    source_count: int = 0
    target_count: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    untransformable: int = 0
    filtered: int = 0
    examples: list[str] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return self.missing + self.extra + self.different

    @property
    def blocked(self) -> int:
        """Documents that keep a verdict from passing: mismatches and untransformable ones."""
        return self.mismatches + self.untransformable

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def full_compare(
    source: Collection[dict[str, Any]],
    target: Collection[dict[str, Any]],
    spec: MigrationSpec,
) -> CompareReport:
    """Walk both collections in _id order (:func:`merge_join`) and classify every key.

    Source documents the spec rejects are counted as ``untransformable`` and named
    in ``rejected``: they are in quarantine, not silently missing.
    """
    report = CompareReport()
    # On the primary, majority-committed: a verdict on a lagging secondary could agree
    # with a prefix that lacks the newest writes, or with writes a failover rolls back.
    src = read_sorted(on_primary(source), [{}], batch=_BATCH)
    tgt = read_stored(on_primary(target), [{}], batch=_BATCH)
    try:
        for s_doc, t_doc in merge_join(src, tgt):
            if s_doc is None:
                assert t_doc is not None
                report.target_count += 1
                _count(report, t_doc.doc_id, classify(None, t_doc.decode()))
                continue
            report.source_count += 1
            expected = _expect(spec, s_doc, report)
            if t_doc is None:
                _count(report, s_doc["_id"], classify(expected, None))
                continue
            report.target_count += 1
            if not agrees_exactly(expected, t_doc):
                _count(report, s_doc["_id"], classify(expected, t_doc.decode()))
    finally:
        src.close()
        tgt.close()
    return report


#: ``_id`` types whose Python equality is MongoDB's: two equal values of one of them are
#: one ``_id`` (not so for documents, where Python ignores field order, or doubles: NaN).
_EXACT_IDS = frozenset({ObjectId, int, Int64, str})


def merge_join(
    src: Iterator[dict[str, Any]], tgt: Iterator[StoredDoc]
) -> Iterator[tuple[dict[str, Any] | None, StoredDoc | None]]:
    """Pair two ``_id``-sorted streams by ``_id``: (source, target), (source, None), (None, target).

    Both sides must come in ``id_order`` (BSON order, as ``read_sorted`` and
    ``read_stored`` read them); ids neither before the other are the same document
    (MongoDB's ``_id`` index holds one of 1 and 1.0, not both).
    """
    s_doc, t_doc = next(src, None), next(tgt, None)
    while s_doc is not None or t_doc is not None:
        if s_doc is not None and t_doc is not None:
            s_id, t_id = s_doc["_id"], t_doc.doc_id
            kind = type(s_id)
            # The usual pair, one _id on both sides, without the two id_cmp calls.
            if kind is type(t_id) and kind in _EXACT_IDS and s_id == t_id:
                yield s_doc, t_doc
                s_doc, t_doc = next(src, None), next(tgt, None)
                continue
        if t_doc is None or (s_doc is not None and id_before(s_doc["_id"], t_doc.doc_id)):
            yield s_doc, None
            s_doc = next(src, None)
        elif s_doc is None or id_before(t_doc.doc_id, s_doc["_id"]):
            yield None, t_doc
            t_doc = next(tgt, None)
        else:
            yield s_doc, t_doc
            s_doc, t_doc = next(src, None), next(tgt, None)


def _expect(spec: MigrationSpec, doc: dict[str, Any], report: CompareReport) -> Expectation:
    expected = expect(spec, doc)
    if expected.filtered:
        report.filtered += 1  # the spec leaves it out: the target must not have it
    return expected


def _count(report: CompareReport, doc_id: Any, diff: Difference | None) -> None:
    if diff is None:
        return
    if diff.kind == "missing":
        report.missing += 1
        report._example(f"missing in target: _id={doc_id!r}")
    elif diff.kind == "orphan":
        report.extra += 1
        report._example(f"extra in target: _id={doc_id!r}")
    elif diff.kind == "untransformable":
        report.untransformable += 1
        if len(report.rejected) < MAX_NAMED:
            report.rejected.append((doc_id, diff.reason or ""))
    else:
        report.different += 1
        paths = ", ".join(d.path for d in diff.diffs[:3])
        report._example(f"different: _id={doc_id!r} ({paths})")


# -- reading ------------------------------------------------------------------

#: Explicit batches: mongo-java-server otherwise answers one getMore with the whole
#: rest of the collection, which passes the 48 MB message limit at ~200,000 documents.
_BATCH = 2_000
#: Raw batches a reader thread holds ahead of its consumer (memory: this many batches).
_AHEAD = 2
_END = object()


class StoredDoc(NamedTuple):
    """A target document as read: its ``_id`` and its BSON (``_sm`` included), undecoded.

    A named tuple: one is made per target document read, the cheapest immutable record.
    """

    doc_id: Any
    body: bytes
    options: CodecOptions[dict[str, Any]]

    def decode(self) -> dict[str, Any]:
        """The document as a plain read returns it, minus ``_sm``."""
        doc = bson.decode(self.body, self.options)
        doc.pop(META_FIELD, None)
        return doc


def read_sorted(
    coll: Collection[dict[str, Any]], queries: Iterable[dict[str, Any]], *, batch: int
) -> Generator[dict[str, Any], None, None]:
    """The documents of ``queries`` in turn, each sorted by ``_id``, decoded as ``coll`` decodes.

    A thread fetches the raw batches ahead of the caller (PyMongo releases the
    GIL while it waits on the socket), so the server's scan overlaps the
    caller's work; each batch is decoded in one call of the C decoder.
    """
    options = coll.codec_options
    with contextlib.closing(_read_ahead(coll, queries, batch)) as batches:
        for data in batches:
            yield from bson.decode_all(data, options)


def read_stored(
    coll: Collection[dict[str, Any]], queries: Iterable[dict[str, Any]], *, batch: int
) -> Generator[StoredDoc, None, None]:
    """As :func:`read_sorted`, but each document stays BSON, ``_sm`` included.

    Not projected away: mongo-java-server builds a projection's whole result before
    its first batch, an idle wait for the compare; :func:`agrees_exactly` sees past
    it and :meth:`StoredDoc.decode` drops it.
    """
    options = coll.codec_options
    plain_ids = options.type_registry == TypeRegistry()  # no custom decoder can change an _id
    with contextlib.closing(_read_ahead(coll, queries, batch)) as batches:
        for data in batches:
            pos, end = 0, len(data)
            while pos < end:
                size = int.from_bytes(data[pos : pos + 4], "little")
                body = data[pos : pos + size]
                pos += size
                doc_id = _first_id(body) if plain_ids else _NO_ID
                if doc_id is _NO_ID:
                    doc_id = bson.decode(body, options)["_id"]
                yield StoredDoc(doc_id, body, options)


_NO_ID = object()


def _first_id(body: bytes) -> Any:
    """The ``_id`` of a BSON document when it is an ObjectId, int or long, from its bytes.

    Other types (and no ``_id``) return ``_NO_ID``: the caller decodes instead.
    """
    if len(body) > 21 and body[4] == 0x07 and body.startswith(b"_id\x00", 5):
        return ObjectId(body[9:21])  # the usual first ObjectId, without the general walk
    element = events.id_element(body)
    if element is None:
        return _NO_ID
    kind, value = element[0], element[5:]  # past the type byte and "_id\0"
    if kind == 0x07:
        return ObjectId(value)
    if kind == 0x10:
        return int.from_bytes(value, "little", signed=True)
    if kind == 0x12:
        return Int64(int.from_bytes(value, "little", signed=True))
    return _NO_ID


def _read_ahead(
    coll: Collection[dict[str, Any]], queries: Iterable[dict[str, Any]], batch: int
) -> Generator[bytes, None, None]:
    """Raw reply batches of ``queries`` sorted by ``_id``, read by a thread up to ``_AHEAD`` ahead.

    Closing the generator stops the thread (after its current getMore) and closes
    its cursor; an error in the thread is raised here, in the caller.
    """
    ahead: queue.Queue[Any] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for query in queries:
                cursor = coll.find_raw_batches(query).sort("_id", 1).batch_size(batch)
                try:
                    for data in cursor:
                        if not put(data):
                            return
                finally:
                    cursor.close()
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=produce, name=f"read-{coll.name}", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
