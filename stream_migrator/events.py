"""The change-event envelope and its Avro codec.

Wire format of a Kafka value: one magic byte (``0x01``) then the schemaless
Avro encoding of ``schemas/change_envelope.avsc``. The document inside is BSON,
so every BSON type survives the trip untouched.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import bson
import fastavro
from bson import Timestamp
from bson.codec_options import CodecOptions

from stream_migrator.errors import EnvelopeError

Op = Literal["insert", "update", "replace", "delete", "snapshot"]
MAGIC = b"\x01"
_SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "change_envelope.avsc"
# tz_aware keeps datetimes comparable and round-trippable; document_class=dict keeps order.
BSON_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


@cache
def _schema() -> Any:
    # The package is installed editable beside schemas/ (see README); the schema
    # file stays the single source of truth for other-language consumers.
    return fastavro.parse_schema(json.loads(_SCHEMA_FILE.read_text()))


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
    record = {
        "op": event.op,
        "ns": event.ns,
        "key": event.key,
        "document": None if event.document is None else bson.encode(event.document),
        "cluster_time": event.cluster_time,
        "captured_at_ms": event.captured_at_ms,
        "resume_token": None if event.resume_token is None else bson.encode(event.resume_token),
    }
    buf = io.BytesIO()
    buf.write(MAGIC)
    fastavro.schemaless_writer(buf, _schema(), record)
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
        record: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
            io.BytesIO(value[1:]), _schema(), None
        )
        key = bson.decode(record["key"], BSON_OPTIONS)
        doc = record["document"]
        token = record["resume_token"]
        return ChangeEvent(
            op=record["op"],
            ns=record["ns"],
            doc_id=key["_id"],
            document=None if doc is None else bson.decode(doc, BSON_OPTIONS),
            cluster_time=record["cluster_time"],
            captured_at_ms=record["captured_at_ms"],
            resume_token=None if token is None else bson.decode(token, BSON_OPTIONS),
        )
    except EnvelopeError:
        raise
    except Exception as exc:  # any decoder failure means a corrupt message
        raise EnvelopeError(f"corrupt change envelope: {type(exc).__name__}: {exc}") from exc


#: ``change_identity`` found no ``_id`` (only on mongo-java-server; see there).
NO_ID: Any = object()


def change_identity(change: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """The ``(_id, full document)`` of a MongoDB change event, whoever captured it.

    MongoDB puts the id in ``documentKey._id`` and gives a null ``fullDocument``
    when ``updateLookup`` finds the document gone. mongo-java-server puts the
    update specification into ``documentKey`` of update events and hands back the
    update delta (or ``{}``) as the full document of a vanished one. So: a full
    document that is empty or has ``$`` keys is none; the id falls back to the full
    document's; ``NO_ID`` means an update of a vanished document (nothing to write:
    the delete that removed it follows). A delete without a key is an EnvelopeError.
    """
    op = change.get("operationType")
    doc = change.get("fullDocument") if op != "delete" else None
    if doc is not None and (
        not isinstance(doc, dict) or not doc or any(k.startswith("$") for k in doc)
    ):
        doc = None
    key = change.get("documentKey")
    if isinstance(key, dict) and "_id" in key:
        return key["_id"], doc
    if doc is not None and "_id" in doc:
        return doc["_id"], doc
    if op == "delete":
        raise EnvelopeError(
            f"a delete event has no documentKey._id (token {change.get('_id')}): "
            "the delete cannot be applied"
        )
    return NO_ID, None
