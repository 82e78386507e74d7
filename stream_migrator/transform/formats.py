"""Kafka Connect formats: the MongoDB source connector's change events in, sink records out.

In: a record written by ``com.mongodb.kafka.connect.MongoSourceConnector`` with
``output.format.value=json`` (the change event as an Extended JSON string; see
``connectors/mongo-source.json``). It becomes the same :class:`ChangeEvent` our own
capture produces, so the transform worker, the spec and the version guard cannot
tell the two sources apart. Also accepted: the same string wrapped by Connect's
``JsonConverter`` (quoted, or as ``{"schema", "payload"}``) and raw BSON
(``output.format.value=bson`` with the ``ByteArrayConverter``).

Out: a record for ``com.mongodb.kafka.connect.MongoSinkConnector`` with string
converters (``connectors/mongo-sink.json``): key ``{"_id": ...}`` and value the
stamped target document, both canonical Extended JSON, so ObjectId, Decimal128,
Int64 and dates reach the target with their BSON types; a delete is a tombstone.

Everything is decoded with ``bson.json_util``, never ``json``: plain JSON would
turn ``{"$numberDecimal": "12.50"}`` into a dict and dates into strings.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import bson
from bson import Timestamp, json_util
from bson.int64 import Int64
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions

from stream_migrator.errors import EnvelopeError
from stream_migrator.events import (
    BSON_OPTIONS,
    META_FIELD,
    NO_ID,
    ChangeEvent,
    Op,
    change_identity,
    version_of,
)
from stream_migrator.interfaces import TargetWrite

#: Reads canonical and relaxed Extended JSON alike; tz-aware like our BSON codec.
_READ_JSON = JSONOptions(tz_aware=True, tzinfo=dt.UTC)
_DATA_OPS: dict[str, Op] = {
    "insert": "insert",
    "update": "update",
    "replace": "replace",
    "delete": "delete",
}


def decode_connector_event(value: bytes | None, *, ns: str = "") -> ChangeEvent:
    """Turn one source-connector record value into a :class:`ChangeEvent`.

    ``ns`` is used when the event carries no ``ns`` (mongo-java-server's events do
    not; the source config adds it with a pipeline stage). Raises EnvelopeError,
    which the worker quarantines, for anything that is not a document change.

    The version is the event's ``clusterTime``, exactly as capture computes it.
    Records of ``startup.mode=copy_existing`` carry no cluster time: they get
    version 0, so they lose to every change event of the same document and never
    overwrite a newer state (the change stream, opened before the copy, replays
    every later change).
    """
    if not value:
        raise EnvelopeError("empty Kafka value: expected a MongoDB source connector change event")
    change = _change_document(value)
    op_name = change.get("operationType")
    if not isinstance(op_name, str):
        raise EnvelopeError(
            "not a MongoDB change event (no operationType); the source connector must "
            "publish whole change events: publish.full.document.only=false"
        )
    op = _DATA_OPS.get(op_name)
    if op is None:
        raise EnvelopeError(
            f"'{op_name}' change event (token {change.get('_id')}) is not a document "
            "change; the source collection was dropped, renamed or invalidated: decide "
            "whether the migration should continue"
        )
    token = change.get("_id")
    copying = isinstance(token, dict) and token.get("copyingData") is True
    cluster_time = change.get("clusterTime")
    if isinstance(cluster_time, Timestamp):
        version = version_of(cluster_time)
    elif copying:
        version = 0
    else:
        raise EnvelopeError(
            f"{op_name} event (token {token}) has no clusterTime: it cannot be ordered "
            "against other changes, so it is not applied"
        )
    doc_id, doc = change_identity(change)
    if doc_id is NO_ID:
        # Only on mongo-java-server (its update events carry the update spec as
        # documentKey) when the document is already gone: the worker skips an event
        # without a document, and the delete that removed it follows.
        doc_id, doc = None, None
    return ChangeEvent(
        op=op,
        ns=_namespace(change) or ns,
        doc_id=doc_id,
        document=doc,
        cluster_time=version,
        captured_at_ms=_captured_at_ms(change, cluster_time),
        resume_token=None if copying or not isinstance(token, dict) else token,
    )


def _change_document(value: bytes) -> dict[str, Any]:
    """The change event as a dict, whichever converter wrote the record."""
    if _looks_like_bson(value):
        return bson.decode(value, BSON_OPTIONS)
    try:
        parsed: Any = json_util.loads(value.decode("utf-8"), json_options=_READ_JSON)
        if isinstance(parsed, dict) and parsed.keys() == {"schema", "payload"}:
            parsed = parsed["payload"]  # JsonConverter with schemas.enable=true
        if isinstance(parsed, str):  # JsonConverter: the JSON string, quoted once more
            parsed = json_util.loads(parsed, json_options=_READ_JSON)
    except Exception as exc:  # any parser failure means a record of another format
        raise EnvelopeError(
            f"not a MongoDB source connector record ({type(exc).__name__}: {exc}); "
            "expected an Extended JSON change event (output.format.value=json)"
        ) from exc
    if not isinstance(parsed, dict):
        raise EnvelopeError(
            f"not a MongoDB source connector record: a JSON {type(parsed).__name__}, "
            "expected a change event document"
        )
    return parsed


def _looks_like_bson(value: bytes) -> bool:
    """A BSON document starts with its own length (int32 LE) and ends with 0x00."""
    return len(value) >= 5 and int.from_bytes(value[:4], "little") == len(value) and value[-1] == 0


def _namespace(change: dict[str, Any]) -> str:
    ns = change.get("ns")
    if isinstance(ns, dict) and ns.get("db") and ns.get("coll"):
        return f"{ns['db']}.{ns['coll']}"
    return ""


def _captured_at_ms(change: dict[str, Any], cluster_time: Any) -> int:
    wall = change.get("wallTime")
    if isinstance(wall, dt.datetime):
        return int(wall.timestamp() * 1000)
    if isinstance(cluster_time, Timestamp):
        return cluster_time.time * 1000
    return int(time.time() * 1000)


# -- out: records for the MongoDB sink connector ---------------------------------
def sink_key(doc_id: Any) -> bytes:
    """Sink record key: canonical Extended JSON ``{"_id": ...}`` (same id, same bytes).

    The sink connector's ``ProvidedInKeyStrategy`` takes the target ``_id`` from
    here, and Kafka's partitioner keeps every record of one document in order.
    """
    return json_util.dumps({"_id": doc_id}, json_options=CANONICAL_JSON_OPTIONS).encode()


def sink_value(write: TargetWrite) -> bytes | None:
    """Sink record value: the stamped target document, or None (tombstone) for a delete.

    The document carries ``_sm.v`` like one written by MongoSink, so the target
    looks the same whichever writer produced it (and compare ignores ``_sm``).
    """
    if write.document is None:
        return None
    doc = {"_id": write.doc_id}
    doc.update((k, v) for k, v in write.document.items() if k not in {"_id", META_FIELD})
    doc[META_FIELD] = {"v": Int64(write.version)}
    return json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS).encode()
