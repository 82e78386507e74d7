"""Kafka Connect formats: source-connector change events in, sink-connector records out."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128, ObjectId, Timestamp, json_util
from bson.int64 import Int64
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from stream_migrator.errors import EnvelopeError, FatalError, RetryableError
from stream_migrator.events import version_of
from stream_migrator.infra.connect import render_connector
from stream_migrator.interfaces import TargetWrite
from stream_migrator.transform.formats import decode_connector_event, sink_key, sink_value
from stream_migrator.transform.kafka_sink import KafkaTopicSink, default_sink_topic

# Record values exactly as mongo-kafka-connect 2.0.1 wrote them (connectors/mongo-source.json,
# StringConverter) from mongo-java-server 1.47, copied from the topic byte for byte.
REAL_INSERT = (
    b'{"_id": {"_data": "6b058bd900000004"}, "operationType": "insert", "fullDocument": '
    b'{"_id": {"$oid": "6b058bd92bf2c770a854d7cf"}, "d": {"$numberDecimal": "12.50"}, '
    b'"t": {"$date": {"$numberLong": "1704164645678"}}, "b": {"$binary": {"base64": "AAE=", '
    b'"subType": "00"}}, "l": {"$numberLong": "1099511627776"}, "f": {"$numberDouble": "1.5"}}, '
    b'"documentKey": {"_id": {"$oid": "6b058bd92bf2c770a854d7cf"}}, "clusterTime": '
    b'{"$timestamp": {"t": 1795525593, "i": 4}}, "ns": {"db": "src", "coll": "orders"}}'
)
REAL_UPDATE_STANDIN_KEY = (
    b'{"_id": {"_data": "6b058c240000000a"}, "operationType": "update", "fullDocument": '
    b'{"_id": {"$numberInt": "50"}, "n": {"$numberInt": "51"}}, "documentKey": {"$set": '
    b'{"n": {"$numberInt": "51"}}}, "clusterTime": {"$timestamp": {"t": 1795525668, "i": 10}}, '
    b'"ns": {"db": "src", "coll": "orders"}}'
)
REAL_UPDATE_OF_DELETED = (
    b'{"_id": {"_data": "6b058bd900000005"}, "operationType": "update", "fullDocument": '
    b'{"x": {"$numberInt": "1"}}, "documentKey": {"$set": {"x": {"$numberInt": "1"}}}, '
    b'"clusterTime": {"$timestamp": {"t": 1795525593, "i": 5}}, "ns": {"db": "src", '
    b'"coll": "orders"}}'
)
REAL_DELETE = (
    b'{"_id": {"_data": "6b058bd900000008"}, "operationType": "delete", "fullDocument": null, '
    b'"documentKey": {"_id": {"$oid": "6b058bd92bf2c770a854d7cf"}}, "clusterTime": '
    b'{"$timestamp": {"t": 1795525593, "i": 8}}, "ns": {"db": "src", "coll": "orders"}}'
)
REAL_COPY_EXISTING = (
    b'{"_id": {"_id": {"$numberInt": "1"}, "copyingData": true}, "operationType": "insert", '
    b'"documentKey": {"_id": {"$numberInt": "1"}}, "fullDocument": {"_id": {"$numberInt": "1"}, '
    b'"n": {"$numberInt": "100"}}, "ns": {"db": "src", "coll": "orders"}}'
)


def _mongodb_change(op: str, **extra: Any) -> dict[str, Any]:
    """A change event shaped like real MongoDB's (ns, wallTime, documentKey = {_id})."""
    return {
        "_id": {"_data": "8265A1B2C3000000012B022C0100296E5A1004"},
        "operationType": op,
        "clusterTime": Timestamp(1_700_000_000, 7),
        "wallTime": dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": 42},
        **extra,
    }


def test_decode_real_insert_keeps_bson_types() -> None:
    """An insert recorded from the connector decodes with ObjectId, Decimal128, date, Int64."""
    event = decode_connector_event(REAL_INSERT)
    assert event.op == "insert"
    assert event.ns == "src.orders"
    assert event.doc_id == ObjectId("6b058bd92bf2c770a854d7cf")
    assert event.document == {
        "_id": ObjectId("6b058bd92bf2c770a854d7cf"),
        "d": Decimal128("12.50"),
        "t": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
        "b": b"\x00\x01",
        "l": Int64(1099511627776),
        "f": 1.5,
    }
    assert isinstance(event.document["l"], Int64)
    assert event.cluster_time == version_of(Timestamp(1795525593, 4))
    assert event.resume_token == {"_data": "6b058bd900000004"}
    assert event.captured_at_ms == 1795525593 * 1000


def test_decode_standin_update_takes_id_from_full_document() -> None:
    """mongo-java-server's update spec in documentKey: the _id comes from fullDocument."""
    event = decode_connector_event(REAL_UPDATE_STANDIN_KEY)
    assert (event.op, event.doc_id, event.document) == ("update", 50, {"_id": 50, "n": 51})
    assert event.cluster_time == version_of(Timestamp(1795525668, 10))


def test_decode_update_of_deleted_document_has_no_document() -> None:
    """An updateLookup that found the document gone yields no document (the worker skips it)."""
    event = decode_connector_event(REAL_UPDATE_OF_DELETED)
    assert event.op == "update"
    assert event.document is None


def test_decode_real_delete_has_key_and_no_document() -> None:
    """A delete carries documentKey._id and no document."""
    event = decode_connector_event(REAL_DELETE)
    assert (event.op, event.doc_id, event.document) == (
        "delete",
        ObjectId("6b058bd92bf2c770a854d7cf"),
        None,
    )


def test_decode_copy_existing_record_gets_version_zero() -> None:
    """A copy_existing record has no cluster time: version 0, so any change event beats it."""
    event = decode_connector_event(REAL_COPY_EXISTING)
    assert (event.op, event.doc_id, event.document) == ("insert", 1, {"_id": 1, "n": 100})
    assert event.cluster_time == 0
    assert event.resume_token is None


@pytest.mark.parametrize("options", [CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS])
def test_decode_mongodb_shaped_replace_in_either_json_mode(options: Any) -> None:
    """Canonical and relaxed Extended JSON of a real-MongoDB replace decode alike."""
    doc = {"_id": 42, "when": dt.datetime(2024, 5, 1, tzinfo=dt.UTC), "n": Int64(3)}
    change = _mongodb_change("replace", fullDocument=doc)
    event = decode_connector_event(json_util.dumps(change, json_options=options).encode())
    assert (event.op, event.ns, event.doc_id) == ("replace", "shop.orders", 42)
    assert event.document is not None
    assert event.document["when"] == doc["when"]
    assert event.cluster_time == version_of(Timestamp(1_700_000_000, 7))
    assert event.captured_at_ms == 1_700_000_000_123


def test_decode_update_with_null_full_document_has_no_document() -> None:
    """Real MongoDB's null fullDocument (document gone before lookup) yields no document."""
    change = _mongodb_change("update", fullDocument=None)
    event = decode_connector_event(json_util.dumps(change).encode())
    assert (event.doc_id, event.document) == (42, None)


def test_decode_without_ns_uses_the_given_namespace() -> None:
    """An event without ns (mongo-java-server without the pipeline stage) takes ``ns``."""
    change = _mongodb_change("insert", fullDocument={"_id": 42})
    del change["ns"]
    event = decode_connector_event(json_util.dumps(change).encode(), ns="db.coll")
    assert event.ns == "db.coll"


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: json.dumps(s).encode(), id="json-converter-string"),
        pytest.param(
            lambda s: json.dumps({"schema": {"type": "string"}, "payload": s}).encode(),
            id="json-converter-schemas",
        ),
        pytest.param(
            lambda s: bson.encode(json_util.loads(s)),
            id="raw-bson",
        ),
    ],
)
def test_decode_other_converters_agree_with_string_converter(
    wrap: Callable[[str], bytes],
) -> None:
    """JsonConverter-wrapped and raw BSON values decode to the same event."""
    expected = decode_connector_event(REAL_INSERT)
    assert decode_connector_event(wrap(REAL_INSERT.decode())) == expected


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"", "empty Kafka value"),
        (None, "empty Kafka value"),
        (b"\x01\x02garbage", "not a MongoDB source connector record"),
        (b"[1, 2]", "a JSON list"),
        (b'{"_id": 1, "n": 2}', "publish.full.document.only=false"),
        (json_util.dumps(_mongodb_change("drop")).encode(), "'drop' change event"),
        (json_util.dumps(_mongodb_change("invalidate")).encode(), "'invalidate'"),
        (
            json_util.dumps({**_mongodb_change("insert"), "clusterTime": None}).encode(),
            "no clusterTime",
        ),
        (
            json_util.dumps(_mongodb_change("delete", documentKey={})).encode(),
            "no documentKey._id",
        ),
    ],
)
def test_decode_rejects_what_is_not_a_document_change(value: bytes | None, needle: str) -> None:
    """Anything but an insert/update/replace/delete with a time is an EnvelopeError."""
    with pytest.raises(EnvelopeError, match=needle):
        decode_connector_event(value)


_bson_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.builds(ObjectId),
    st.decimals(min_value=-(10**12), max_value=10**12, places=2).map(lambda d: Decimal128(str(d))),
    st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=dt.UTC)
    ),
    st.binary(max_size=10).map(lambda b: Binary(b, 0)),
)
_docs = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k[0] != "$" and "\x00" not in k), _bson_values
)


@given(doc=_docs, doc_id=st.one_of(st.integers(0, 2**40), st.builds(ObjectId), st.text()))
def test_decode_roundtrips_any_document_through_canonical_json(
    doc: dict[str, Any], doc_id: Any
) -> None:
    """Whatever BSON the source holds, the decoded document equals it, type for type."""
    full = {"_id": doc_id, **doc}
    change = _mongodb_change("insert", fullDocument=full, documentKey={"_id": doc_id})
    value = json_util.dumps(change, json_options=CANONICAL_JSON_OPTIONS).encode()
    event = decode_connector_event(value)
    assert event.doc_id == doc_id
    assert bson.encode(event.document or {}) == bson.encode(full)


# -- out: sink connector records --------------------------------------------------
def test_sink_key_is_canonical_json_of_id() -> None:
    """The sink key is canonical Extended JSON of {_id}, identical for equal ids."""
    oid = ObjectId("6b058bd92bf2c770a854d7cf")
    assert sink_key(oid) == b'{"_id": {"$oid": "6b058bd92bf2c770a854d7cf"}}'
    assert sink_key(Int64(5)) == b'{"_id": {"$numberLong": "5"}}'
    assert sink_key(oid) == sink_key(ObjectId(str(oid)))


def test_sink_value_stamps_version_and_keeps_types() -> None:
    """The sink value is the document with _id and _sm.v, every BSON type preserved."""
    doc = {"total": Decimal128("9.99"), "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "_sm": 1}
    value = sink_value(TargetWrite(ObjectId("6b058bd92bf2c770a854d7cf"), 77, doc))
    assert value is not None
    decoded = json_util.loads(
        value, json_options=CANONICAL_JSON_OPTIONS.with_options(tz_aware=True)
    )
    assert decoded == {
        "_id": ObjectId("6b058bd92bf2c770a854d7cf"),
        "total": Decimal128("9.99"),
        "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "_sm": {"v": 77},
    }
    assert isinstance(decoded["_sm"]["v"], Int64)
    assert next(iter(decoded)) == "_id"


def test_sink_value_of_delete_is_tombstone() -> None:
    """A delete becomes a null value (the sink connector's delete.on.null.values)."""
    assert sink_value(TargetWrite(1, 5, None)) is None


class _FakeMessage:
    pass


class _FakeProducer:
    """Records produce() calls and answers delivery callbacks on flush()."""

    def __init__(self, errors: dict[bytes, KafkaError] | None = None, stuck: int = 0) -> None:
        self.records: list[tuple[str, bytes, bytes | None]] = []
        self._pending: list[tuple[bytes, Any]] = []
        self._errors = errors or {}
        self._stuck = stuck

    def produce(self, topic: str, *, key: bytes, value: bytes | None, on_delivery: Any) -> None:
        self.records.append((topic, key, value))
        self._pending.append((key, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        for key, callback in self._pending:
            callback(self._errors.get(key), _FakeMessage())
        self._pending.clear()
        return self._stuck


def test_kafka_sink_produces_newest_write_per_id_and_tombstones() -> None:
    """One record per _id (the newest), deletes as tombstones, all counted written."""
    producer = _FakeProducer()
    sink = KafkaTopicSink(producer, "sm.m.sink")  # type: ignore[arg-type]
    result = sink.apply(
        [
            TargetWrite(1, 10, {"n": 1}),
            TargetWrite(1, 12, {"n": 2}),
            TargetWrite(2, 11, None),
        ]
    )
    assert (result.written, result.coalesced, result.stale, result.failed) == (2, 1, 0, [])
    assert sorted(producer.records, key=lambda r: r[1]) == [
        ("sm.m.sink", sink_key(1), sink_value(TargetWrite(1, 12, {"n": 2}))),
        ("sm.m.sink", sink_key(2), None),
    ]


def test_kafka_sink_raises_retryable_when_not_acknowledged() -> None:
    """Records still unacknowledged after flush mean back off, never commit."""
    sink = KafkaTopicSink(_FakeProducer(stuck=1), "t")  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="not acknowledged"):
        sink.apply([TargetWrite(1, 1, {})])


def test_kafka_sink_quarantines_too_large_and_retries_transient() -> None:
    """A too-large record fails alone (quarantine); a retriable error retries the batch."""
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    sink = KafkaTopicSink(_FakeProducer({sink_key(2): too_large}), "t")  # type: ignore[arg-type]
    result = sink.apply([TargetWrite(1, 1, {}), TargetWrite(2, 1, {"big": "x"})])
    assert result.written == 1
    assert [(w.doc_id, "refused" in why) for w, why in result.failed] == [(2, True)]

    transient = KafkaError(KafkaError.NOT_ENOUGH_REPLICAS, retriable=True)
    sink = KafkaTopicSink(_FakeProducer({sink_key(1): transient}), "t")  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="transiently"):
        sink.apply([TargetWrite(1, 1, {})])

    fatal = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    sink = KafkaTopicSink(_FakeProducer({sink_key(1): fatal}), "t")  # type: ignore[arg-type]
    with pytest.raises(FatalError, match="refused 1 records"):
        sink.apply([TargetWrite(1, 1, {})])


def test_default_sink_topic_follows_migration() -> None:
    """An empty SM_SINK_TOPIC means sm.<migration>.sink."""
    assert default_sink_topic("orders-v2") == "sm.orders-v2.sink"


# -- connector configs ---------------------------------------------------------------
def test_render_source_connector_fills_names_and_pipeline() -> None:
    """The source config maps the namespace to our topic and adds ns for the stand-in."""
    cfg = render_connector(
        "mongo-source",
        NAME="src",
        MONGO_URI='mongodb://u:p"w@h:1/?directConnection=true',
        SOURCE_DB="shop",
        SOURCE_COLLECTION="orders",
        CHANGES_TOPIC="sm.m.changes",
    )
    conf = cfg["config"]
    assert cfg["name"] == "src"
    assert conf["connection.uri"] == 'mongodb://u:p"w@h:1/?directConnection=true'
    assert json.loads(conf["topic.namespace.map"]) == {"shop.orders": "sm.m.changes"}
    assert json.loads(conf["pipeline"]) == [
        {"$addFields": {"ns": {"db": "shop", "coll": "orders"}}}
    ]
    assert conf["output.json.formatter"].endswith("ExtendedJson")
    assert conf["publish.full.document.only"] == "false"


def test_render_sink_connector_deletes_on_tombstones() -> None:
    """The sink config takes _id from the key and deletes on null values."""
    conf = render_connector(
        "mongo-sink",
        NAME="sink",
        MONGO_URI="mongodb://h:1",
        SINK_TOPIC="sm.m.sink",
        TARGET_DB="shop",
        TARGET_COLLECTION="orders_v2",
    )["config"]
    assert conf["topics"] == "sm.m.sink"
    assert conf["document.id.strategy"].endswith("ProvidedInKeyStrategy")
    assert conf["delete.on.null.values"] == "true"


def test_render_connector_names_a_missing_variable() -> None:
    """A template variable without a value is an error naming it."""
    with pytest.raises(Exception, match=r"\$\{SINK_TOPIC\}"):
        render_connector("mongo-sink", NAME="x", MONGO_URI="m", TARGET_DB="d")
