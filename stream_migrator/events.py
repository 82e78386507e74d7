"""The change-event envelope and its Avro codec.

Wire format of a Kafka value: one magic byte (``0x01``) then the schemaless
Avro encoding of ``schemas/change_envelope.avsc``. The document inside is BSON,
so every BSON type survives the trip untouched.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import bson
from bson import Timestamp
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.raw_bson import RawBSONDocument

from stream_migrator.errors import EnvelopeError

#: Field every target document carries: ``{v: version}`` for the version guard, plus
#: provenance (``echo``). Beside the envelope because the version it holds is the
#: envelope's ``cluster_time`` (or an application's stamp, see the router).
META_FIELD = "_sm"

Op = Literal["insert", "update", "replace", "delete", "snapshot"]
MAGIC = b"\x01"
_SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "change_envelope.avsc"
# tz_aware keeps datetimes comparable and round-trippable; document_class=dict keeps order.
BSON_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)
#: Capture reads documents and change events as these: the server's bytes, decoded only
#: where a field is read (the same options when it is), so a document goes into the
#: envelope without a decode and a re-encode.
RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument, tz_aware=True
)


class _Avro(NamedTuple):
    schema: Any
    read: Callable[..., Any]
    write: Callable[..., Any]


@cache
def _avro() -> _Avro:
    """The envelope's parsed schema and fastavro's codec, loaded on first use.

    Why lazy: the application SDK (the router) imports this module for versions and
    ``META_FIELD`` and never encodes an envelope.
    """
    import fastavro

    # The package is installed editable beside schemas/ (see README); the schema
    # file stays the single source of truth for other-language consumers.
    schema = fastavro.parse_schema(json.loads(_SCHEMA_FILE.read_text()))
    return _Avro(schema, fastavro.schemaless_reader, fastavro.schemaless_writer)


def version_of(ts: Timestamp) -> int:
    """Pack a BSON cluster time into one comparable int64: seconds << 32 | increment."""
    return (ts.time << 32) | ts.inc


def timestamp_of(version: int) -> Timestamp:
    """Inverse of :func:`version_of`."""
    return Timestamp(version >> 32, version & 0xFFFFFFFF)


#: The increment of an application's version (``router.stamp``) has its top bit set:
#: a cluster time's increment counts operations within one second and never gets near
#: 2**31, so a stamp of second ``s`` is later than every change of ``s``. The lower 31
#: bits order stamps within the second (nanoseconds, then a per-process counter).
APP_FLAG = 0x80000000
#: The increment of the first stamps (before sub-second ordering): all ones.
APP_INCREMENT = 0xFFFFFFFF


def app_version(seconds: int, fraction: int | None = None) -> int:
    """The version an application stamps on a write made in second ``seconds``.

    ``fraction`` (0 .. 2**31 - 1, e.g. nanoseconds) orders stamps within the second;
    None gives the end of the second (all ones), the stamp of earlier releases.
    """
    if fraction is None:
        return (seconds << 32) | APP_INCREMENT
    return (seconds << 32) | APP_FLAG | (fraction & 0x7FFFFFFF)


def is_app_version(version: int) -> bool:
    """True for a version stamped by an application, False for a pipeline's cluster time."""
    return bool(version & APP_FLAG)


def hashable_id(value: Any) -> Any:
    """An ``_id`` usable as a dict key (documents and lists by their repr).

    Python's ``True == 1`` would merge two _ids MongoDB keeps apart (bool and number
    are different BSON types), so a bool gets a key of its own; ``1`` and ``1.0`` stay
    one key, as they are one _id to MongoDB's unique index.
    """
    if isinstance(value, bool):
        return ("bool", value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def key_bytes(doc_id: Any) -> bytes:
    """Canonical Kafka key of a document: BSON of ``{_id: id}`` (same id, same bytes)."""
    return bson.encode({"_id": doc_id})


_INT32 = struct.Struct("<i")
# Value sizes of the fixed-width BSON types: double, undefined, ObjectId, bool, datetime,
# null, int32, timestamp, int64, decimal128, max key, min key.
_FIXED_SIZE = {
    0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0,
    0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0,
}  # fmt: skip
# An ``_id`` of these types decodes to a value that encodes back to the same bytes
# (double, string, binary, ObjectId, bool, int32, int64, decimal128): its element can be
# the key as it is. Others (an embedded document may hold a DBRef, a symbol decodes as a
# string, ...) go the long way, through key_bytes of the decoded value.
_VERBATIM_ID = frozenset({0x01, 0x02, 0x05, 0x07, 0x08, 0x10, 0x12, 0x13})


def _elements(raw: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Top-level elements of a BSON document: (name, element start, element end)."""
    at, end = 4, len(raw) - 1
    while at < end:
        kind = raw[at]
        name_end = raw.index(b"\x00", at + 1)
        value = name_end + 1
        size = _FIXED_SIZE.get(kind)
        if size is None:
            if kind in (0x02, 0x0D, 0x0E):  # string, code, symbol
                size = 4 + _INT32.unpack_from(raw, value)[0]
            elif kind in (0x03, 0x04, 0x0F):  # document, array, code with scope
                size = _INT32.unpack_from(raw, value)[0]
            elif kind == 0x05:  # binary: length, subtype, bytes
                size = 5 + _INT32.unpack_from(raw, value)[0]
            elif kind == 0x0B:  # regex: two C strings
                size = raw.index(b"\x00", raw.index(b"\x00", value) + 1) + 1 - value
            elif kind == 0x0C:  # DBPointer: string, ObjectId
                size = 4 + _INT32.unpack_from(raw, value)[0] + 12
            else:
                raise InvalidBSON(f"unknown BSON type 0x{kind:02x} at byte {at}")
        if size < 0 or value + size > end:
            raise InvalidBSON(f"BSON element at byte {at} overruns its document")
        yield raw[at + 1 : name_end], at, value + size
        at = value + size


def _verbatim(element: bytes) -> bool:
    """True when the ``_id`` element re-encodes, once decoded, to exactly these bytes."""
    kind = element[0]
    if kind not in _VERBATIM_ID:
        return False
    value = element[5:]  # past the type byte and "_id\0"
    if kind == 0x02:  # valid UTF-8 ending in its NUL, or decoding raises (long way)
        try:
            value[4:-1].decode("utf-8")
        except UnicodeDecodeError:
            return False
        return value[-1:] == b"\x00" and len(value) == 4 + _INT32.unpack_from(value)[0]
    if kind == 0x05:  # subtype 2 (old binary) carries a second length: long way
        return value[4] != 2
    if kind == 0x08:
        return value in (b"\x00", b"\x01")
    return True


_OBJECT_ID_KEY_SIZE = _INT32.pack(22)  # {_id: ObjectId}: 4 + 17 + 1 bytes


def id_element(raw: bytes) -> bytes | None:
    """The ``_id`` element of BSON document ``raw`` as it is in its bytes; None without one.

    The element is the type byte, ``_id\\0`` and the value. MongoDB stores ``_id``
    first, so usually only the first element is read (one of a fixed size, such as
    an ObjectId or a number, without a walk); nothing is decoded. Raises InvalidBSON
    on malformed bytes.
    """
    if raw.startswith(b"_id\x00", 5):  # first, and of a fixed size: no walk
        size = _FIXED_SIZE.get(raw[4])
        if size is not None and len(raw) > 9 + size:
            return raw[4 : 9 + size]
    for name, start, end in _elements(raw):
        if name == b"_id":
            return raw[start:end]
    return None


def _raw_key(raw: bytes) -> bytes | None:
    """:func:`key_bytes` of the ``_id`` of BSON document ``raw``, taken from its bytes."""
    element = id_element(raw)
    if element is None:
        return None
    if element[0] == 0x07:  # the usual ObjectId: verbatim, and the key's size is known
        return _OBJECT_ID_KEY_SIZE + element + b"\x00"
    wrapped = _INT32.pack(len(element) + 5) + element + b"\x00"
    if _verbatim(element):
        return wrapped
    return key_bytes(bson.decode(wrapped, BSON_OPTIONS)["_id"])


def id_key(doc: Mapping[str, Any]) -> bytes | None:
    """:func:`key_bytes` of ``doc['_id']`` (None if it has none), cheap for a raw document.

    A RawBSONDocument is not decoded: its ``_id`` element, wrapped, is the key (the
    bytes ``key_bytes`` gives the decoded id, which partitioning depends on).
    """
    if isinstance(doc, RawBSONDocument):
        return _raw_key(bytes(doc.raw))
    return key_bytes(doc["_id"]) if "_id" in doc else None


def bson_of(doc: Mapping[str, Any]) -> bytes:
    """BSON bytes of a document: a raw document's own, a decoded one's encoding."""
    if isinstance(doc, RawBSONDocument):
        # A slice of a cursor's batch is a memoryview (PyMongo 4.18+): the envelope needs bytes.
        return bytes(doc.raw)
    return bson.encode(doc)


def _no_document(doc: Any) -> bool:
    """Empty, not a document, or holding ``$`` keys (an update spec): no full document."""
    if not isinstance(doc, Mapping):
        return True
    if isinstance(doc, RawBSONDocument):
        raw = bytes(doc.raw)
        # Most documents have no "$" byte at all: only those need their names read.
        return len(raw) <= 5 or (
            b"$" in raw and any(name.startswith(b"$") for name, _, _ in _elements(raw))
        )
    return not doc or any(k.startswith("$") for k in doc)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of one source document, as carried through Kafka."""

    op: Op
    ns: str
    doc_id: Any
    document: dict[str, Any] | None
    cluster_time: int
    captured_at_ms: int
    resume_token: dict[str, Any] | None = None

    @property
    def key(self) -> bytes:
        return key_bytes(self.doc_id)


def encode(event: ChangeEvent) -> bytes:
    """Encode an event to the Kafka value bytes."""
    return encode_raw(
        event.op,
        event.ns,
        event.key,
        None if event.document is None else bson.encode(event.document),
        event.cluster_time,
        event.captured_at_ms,
        None if event.resume_token is None else bson.encode(event.resume_token),
    )


def encode_raw(
    op: Op,
    ns: str,
    key: bytes,
    document: bytes | None,
    cluster_time: int,
    captured_at_ms: int,
    resume_token: bytes | None,
) -> bytes:
    """:func:`encode` of an event whose key, document and token are BSON bytes already.

    Capture's path: what it read raw goes into the envelope as it came.
    """
    record = {
        "op": op,
        "ns": ns,
        "key": key,
        "document": document,
        "cluster_time": cluster_time,
        "captured_at_ms": captured_at_ms,
        "resume_token": resume_token,
    }
    buf = io.BytesIO()
    buf.write(MAGIC)
    avro = _avro()
    avro.write(buf, avro.schema, record)
    return buf.getvalue()


def decode(value: bytes | None) -> ChangeEvent:
    """Decode Kafka value bytes; raises EnvelopeError naming what is wrong."""
    if not value:
        raise EnvelopeError("empty Kafka value: expected a change envelope")
    if value[:1] != MAGIC:
        raise EnvelopeError(
            f"unknown envelope format byte 0x{value[0]:02x} (expected 0x01); "
            "was this topic written by another producer?"
        )
    try:
        buf = io.BytesIO(value)  # shares the bytes (no copy of value[1:])
        buf.seek(1)
        avro = _avro()
        record: dict[str, Any] = avro.read(buf, avro.schema, None)
        doc, token = record["document"], record["resume_token"]
        # Key, document and token in one decoder call: the BSON documents end to end. Each
        # carries its own length, so a corrupt one shows as a wrong count.
        parts = [p for p in (record["key"], doc, token) if p is not None]
        decoded = bson.decode_all(b"".join(parts), BSON_OPTIONS)
        if len(decoded) != len(parts):
            raise ValueError(f"{len(parts)} BSON documents expected, {len(decoded)} found")
        return ChangeEvent(
            op=record["op"],
            ns=record["ns"],
            doc_id=decoded[0]["_id"],
            document=None if doc is None else decoded[1],
            cluster_time=record["cluster_time"],
            captured_at_ms=record["captured_at_ms"],
            resume_token=None if token is None else decoded[-1],
        )
    except EnvelopeError:
        raise
    except Exception as exc:  # any decoder failure means a corrupt message
        raise EnvelopeError(f"corrupt change envelope: {type(exc).__name__}: {exc}") from exc


#: ``change_identity`` found no ``_id`` (only on mongo-java-server; see there).
NO_ID: Any = object()


def change_identity(change: Mapping[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """The ``(_id, full document)`` of a MongoDB change event, whoever captured it.

    MongoDB puts the id in ``documentKey._id`` and gives a null ``fullDocument``
    when ``updateLookup`` finds the document gone. mongo-java-server puts the
    update specification into ``documentKey`` of update events and hands back the
    update delta (or ``{}``) as the full document of a vanished one. So: a full
    document that is empty or has ``$`` keys is none; the id falls back to the full
    document's; ``NO_ID`` means an update of a vanished document (nothing to write:
    the delete that removed it follows). A delete without a key is an EnvelopeError.
    """
    doc_id, doc = _identity(change, lambda holder: holder.get("_id", NO_ID))
    return doc_id, doc


def change_key(change: Mapping[str, Any]) -> tuple[bytes | None, Mapping[str, Any] | None]:
    """:func:`change_identity` as capture needs it: the Kafka key (None for ``NO_ID``).

    On a change read raw nothing but the few fields looked at is decoded: the key is
    the ``_id`` element's bytes (see :func:`id_key`), the document stays raw.
    """
    key, doc = _identity(change, lambda holder: id_key(holder) or NO_ID)
    return (None if key is NO_ID else key), doc


def token_text(token: Any) -> str:
    """A resume token as logs and messages show it (a raw one decoded)."""
    return str(dict(token)) if isinstance(token, RawBSONDocument) else str(token)


def _identity(change: Mapping[str, Any], id_of: Callable[[Mapping[str, Any]], Any]) -> Any:
    """``(id_of(holder), full document)`` for :func:`change_identity`; ``id_of`` gives NO_ID
    for a holder without ``_id``."""
    op = change.get("operationType")
    doc = change.get("fullDocument") if op != "delete" else None
    if doc is not None and _no_document(doc):
        doc = None
    for holder in (change.get("documentKey"), doc):
        if isinstance(holder, Mapping):
            found = id_of(holder)
            if found is not NO_ID:
                return found, doc
    if op == "delete":
        raise EnvelopeError(
            f"a delete event has no documentKey._id (token {token_text(change.get('_id'))}): "
            "the delete cannot be applied"
        )
    return NO_ID, None
