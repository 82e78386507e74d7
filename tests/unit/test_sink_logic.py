"""Pure logic of the target writer: coalescing, echo marks, how write errors are classified."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.errors import BulkWriteError, WriteConcernError

from stream_migrator.errors import RetryableError
from stream_migrator.interfaces import TargetWrite
from stream_migrator.mongo import MAJORITY_WTIMEOUT_MS
from stream_migrator.redact import show_document_values
from stream_migrator.transform.echo import echo_mark, is_marked_echo
from stream_migrator.transform.sink import MongoSink, coalesce
from stream_migrator.transform.target_docs import same_content
from stream_migrator.transform.write_errors import (
    duplicate_reason,
    is_id_race,
    translate,
    write_error_reason,
    write_errors,
)


def test_coalesce_keeps_newest_per_document() -> None:
    """Only the highest version per _id survives; a delete after an upsert wins."""
    writes = [
        TargetWrite(1, 10, {"a": 1}),
        TargetWrite(2, 11, {"b": 1}),
        TargetWrite(1, 12, None),
        TargetWrite(1, 9, {"a": 0}),
    ]
    kept, dropped = coalesce(writes)
    by_id = {w.doc_id: w for w in kept}
    assert dropped == 2
    assert by_id[1].version == 12
    assert by_id[1].document is None
    assert by_id[2].version == 11


def test_coalesce_equal_version_later_wins() -> None:
    """Same version twice (a redelivery): the later one is kept."""
    kept, dropped = coalesce([TargetWrite("x", 5, {"v": 1}), TargetWrite("x", 5, {"v": 2})])
    assert dropped == 1
    assert kept[0].document == {"v": 2}


def test_coalesce_unhashable_ids() -> None:
    """Document _ids that are sub-documents coalesce too."""
    kept, dropped = coalesce([TargetWrite({"k": 1}, 1, {}), TargetWrite({"k": 1}, 2, None)])
    assert dropped == 1
    assert kept[0].version == 2


def test_a_marked_echo_is_recognised_until_its_content_changes() -> None:
    written = {"cust_name": "a", "address": {"city": "T", "zip": "1"}, "_id": 7}
    mark = echo_mark(written)
    # Read back: _id first, keys in another order, the _sm field beside the content.
    read_back = {"_id": 7, "address": {"zip": "1", "city": "T"}, "cust_name": "a"}
    read_back["_sm"] = {"v": 5, "echo": mark}
    assert is_marked_echo(read_back)
    assert not is_marked_echo({**read_back, "cust_name": "changed by the app"})
    assert not is_marked_echo({"_id": 7, "cust_name": "a", "_sm": {"v": 5}})  # never marked
    assert not is_marked_echo({"_id": 7, "cust_name": "a"})
    assert not is_marked_echo(None)


def _bulk_error(**details: Any) -> BulkWriteError:
    """A BulkWriteError as PyMongo raises it, with the server's documented ``details`` shape."""
    base: dict[str, Any] = {
        "writeErrors": [],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }
    return BulkWriteError({**base, **details})


_WCE = {
    "code": 64,
    "codeName": "WriteConcernFailed",
    "errmsg": "waiting for replication timed out",
    "errInfo": {"wtimeout": True, "writeConcern": {"w": "majority", "wtimeout": 100}},
}


def test_write_errors_raise_retryable_when_the_write_concern_failed() -> None:
    """A bulk that applied on the primary but failed its write concern is retried, not written.

    The stand-in cannot fail a write concern, so this checks our classification of the
    error MongoDB documents: ``writeConcernErrors`` with no ``writeErrors``.
    """
    wce_only = _bulk_error(writeConcernErrors=[_WCE], nUpserted=2, nMatched=1, nModified=1)
    with pytest.raises(RetryableError, match="write concern") as caught:
        write_errors(wce_only)
    assert caught.value.code == 64
    dup = {"index": 0, "code": 11000, "errmsg": "E11000 ... index: _id_ dup key: { _id: 1 }"}
    mixed = _bulk_error(writeErrors=[dup], writeConcernErrors=[_WCE])
    with pytest.raises(RetryableError, match="write concern"):
        write_errors(mixed)


def test_translate_makes_a_write_concern_failure_retryable() -> None:
    """The tombstone bulk and single writes: a write-concern failure backs off, never fatal."""
    assert isinstance(translate(_bulk_error(writeConcernErrors=[_WCE])), RetryableError)
    unsatisfiable = WriteConcernError("Not enough data-bearing nodes", 100, {"code": 100})
    assert isinstance(translate(unsatisfiable), RetryableError)


def test_duplicate_key_on_id_index_is_a_race_by_key_pattern() -> None:
    """MongoDB's write error names the index in ``keyPattern``: only ``_id`` (or sm_cas) races."""
    on_id = {"code": 11000, "keyPattern": {"_id": 1}, "keyValue": {"_id": 1}, "errmsg": "E11000"}
    on_cas = {"code": 11000, "keyPattern": {"_id": 1, "_sm.v": 1}, "errmsg": "E11000"}
    other = {
        "code": 11000,
        "keyPattern": {"order_no": 1},
        "keyValue": {"order_no": "A-1"},
        "errmsg": "E11000 duplicate key error collection: db.t index: order_no_1 dup key: "
        '{ order_no: "A-1" }',
    }
    assert is_id_race(on_id)
    assert is_id_race(on_cas)
    assert not is_id_race(other)
    # keyPattern decides even when the message would say otherwise.
    assert not is_id_race({**other, "errmsg": "E11000 index: _id_ dup key: { _id: 1 }"})
    reason = duplicate_reason(other)
    assert "order_no_1" in reason
    assert "A-1" in reason
    assert "quarantine replay" in reason


def test_duplicate_key_without_key_pattern_falls_back_to_the_index_name() -> None:
    """Servers that omit ``keyPattern`` (mongo-java-server) are judged by ``index: <name>``."""
    msg = "E11000 duplicate key error collection: db.t index: {} dup key: {{ x: 1 }}"
    assert is_id_race({"code": 11000, "errmsg": msg.format("_id_")})
    assert is_id_race({"code": 11000, "errmsg": msg.format("sm_cas")})
    assert not is_id_race({"code": 11000, "errmsg": msg.format("order_no_1")})
    assert not is_id_race({"code": 11000, "errmsg": "E11000 duplicate key error"})
    assert "order_no_1" in duplicate_reason({"code": 11000, "errmsg": msg.format("order_no_1")})


@pytest.mark.parametrize("values_shown", [True, False])
def test_write_failure_reasons_show_document_values_bounded_or_not_at_all(
    values_shown: bool,
) -> None:
    """A write-stage quarantine reason cuts a key value to 64 characters, or shows its type."""
    secret = "private-" + "x" * 500
    with_pattern = {
        "code": 11000,
        "keyPattern": {"email": 1},
        "keyValue": {"email": secret},
        "errmsg": "E11000 duplicate key error collection: db.t index: email_1 "
        f'dup key: {{ email: "{secret}" }}',
    }
    without_pattern = {k: v for k, v in with_pattern.items() if k not in ("keyPattern", "keyValue")}
    other = {"code": 121, "errmsg": f"Document failed validation: {secret}"}
    show_document_values(values_shown)
    try:
        for err in (with_pattern, without_pattern, other):
            reason = write_error_reason(err)
            assert secret not in reason
            assert len(reason) < 400, reason
            assert ("private-" in reason) is values_shown, reason
        assert "email_1" in write_error_reason(without_pattern)
    finally:
        show_document_values(True)


def test_same_content_tells_bson_types_apart() -> None:
    """skip_equal skips only a true no-op: ``1``, ``1.0`` and ``True`` are different BSON values."""
    current = {"_id": 7, "flag": 1, "nested": {"a": 1, "b": 2}, "_sm": {"v": 3}}
    assert same_content(current, TargetWrite(7, 9, {"nested": {"b": 2, "a": 1}, "flag": 1}))
    assert not same_content(current, TargetWrite(7, 9, {"flag": True, "nested": {"a": 1, "b": 2}}))
    assert not same_content(current, TargetWrite(7, 9, {"flag": 1.0, "nested": {"a": 1, "b": 2}}))
    assert not same_content(current, TargetWrite(7, 9, None))


def test_sink_reads_that_decide_a_write_go_to_the_primary() -> None:
    """Versions, tombstones and skip_equal content are read from the primary, whatever the URI.

    A lagging secondary would report an older state: skip_equal would skip a needed
    write, and a missed tombstone would let a late insert resurrect a deleted document.
    """
    client: MongoClient[dict[str, Any]] = MongoClient(
        "mongodb://127.0.0.1:1/?readPreference=secondaryPreferred", connect=False
    )
    try:
        coll = client["db"]["orders_v2"]
        assert coll.read_preference != ReadPreference.PRIMARY  # what the URI asked for
        sink = MongoSink(coll, "cas", skip_equal=True)
        assert sink._coll.read_preference == ReadPreference.PRIMARY
        assert sink.tombstones.read_preference == ReadPreference.PRIMARY
        assert sink._coll.full_name == "db.orders_v2"
        assert sink.tombstones.full_name == "db.orders_v2.sm_tombstones"
    finally:
        client.close()


@pytest.mark.parametrize("uri_options", ["w=1", "w=1&wTimeoutMS=2500", ""])
def test_sink_writes_wait_for_a_majority_whatever_the_uri(uri_options: str) -> None:
    """Target writes and tombstones are acknowledged by a majority, keeping the URI's wtimeout.

    A write the primary alone acknowledged (``w=1``) can be rolled back on failover
    without any error, after its offset was committed: a lost change.
    """
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:1/?{uri_options}", connect=False
    )
    try:
        sink = MongoSink(client["db"]["orders_v2"], "filter")
        # The URI's, else a default: a majority that cannot answer (a secondary down in a
        # primary-secondary-arbiter set) must become a retryable error, not a hang.
        wtimeout = 2500 if "wTimeoutMS" in uri_options else MAJORITY_WTIMEOUT_MS
        for coll in (sink._coll, sink.tombstones):
            assert coll.write_concern.document.get("w") == "majority"
            assert coll.write_concern.document.get("wtimeout") == wtimeout
    finally:
        client.close()


def test_reverse_sink_reads_forward_tombstones_from_the_primary() -> None:
    """The reverse sink tells forward deletes by tombstones read on the primary, whatever the URI.

    A lagging secondary would hide a fresh forward tombstone, and the forward delete
    would travel back to old as if an application had made it.
    """
    from stream_migrator.rollout.reverse import ReverseSink

    client: MongoClient[dict[str, Any]] = MongoClient(
        "mongodb://127.0.0.1:1/?readPreference=secondaryPreferred", connect=False
    )
    try:
        forward_tombstones = client["db"]["orders_v2.sm_tombstones"]
        assert forward_tombstones.read_preference != ReadPreference.PRIMARY
        sink = ReverseSink(client["db"]["orders"], "filter", forward_tombstones)
        assert sink._forward_tombstones.read_preference == ReadPreference.PRIMARY
        assert sink._forward_tombstones.full_name == "db.orders_v2.sm_tombstones"
    finally:
        client.close()
