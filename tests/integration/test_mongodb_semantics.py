"""MongoDB behaviour the product relies on, stated as tests against the configured server.

One test per rule of DESIGN.md's "MongoDB rules the code must hold to" (at least),
each naming the product code that relies on it. Against a real replica set
(``SM_MONGO_URI``, or testcontainers with Docker) every test must pass. Where the
local stand-in, mongo-java-server, does something else, the test is a strict xfail
whose reason says what the stand-in does instead: the product is designed for
MongoDB's behaviour, never for the stand-in's.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from pymongo import InsertOne, MongoClient, ReadPreference, ReplaceOne, UpdateOne
from pymongo.change_stream import ChangeStream
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from stream_migrator.id_order import after_id_filters, id_cmp, type_rank
from stream_migrator.mongo import cluster_time_now

pytestmark = pytest.mark.integration

Doc = dict[str, Any]

#: One ``_id`` of every BSON type an ``_id`` can hold, in MongoDB's sort order.
_IDS_IN_BSON_ORDER: list[Any] = [
    MinKey(),
    None,
    1,
    2.5,
    Int64(3),
    Decimal128("4.5"),
    "a",
    "b",
    {"k": 1},
    Binary(b"\x01", 0),
    ObjectId("65a000000000000000000001"),
    False,
    True,
    dt.datetime(2020, 1, 1),
    Timestamp(5, 1),
    Regex("^a"),
    MaxKey(),
]


@pytest.fixture
def client(mongo_uri: str) -> Iterator[MongoClient[Doc]]:
    c: MongoClient[Doc] = MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000)
    yield c
    c.close()


@pytest.fixture
def db(client: MongoClient[Doc], unique: str) -> Iterator[Database[Doc]]:
    """A database of this test's own, dropped afterwards."""
    database = client[f"sem_{unique}"]
    yield database
    client.drop_database(database.name)


def _on_stand_in(client: MongoClient[Doc]) -> bool:
    """mongo-java-server answers buildInfo without gitVersion (as transform/sink.py detects)."""
    return "gitVersion" not in client.admin.command("buildInfo")


def _stand_in_oplog(client: MongoClient[Doc]) -> str:
    """The stand-in's oplog: "bounded" (deploy/local launcher) or "library" (its own)."""
    return str(_stand_in_marker(client).get("oplog", "library"))


def _stand_in_marker(client: MongoClient[Doc]) -> Doc:
    """What the deploy/local launcher adds to the stand-in (buildInfo.smStandIn), else {}."""
    marker: Doc = client.admin.command("buildInfo").get("smStandIn") or {}
    return marker


def _deviation(request: pytest.FixtureRequest, when: bool, what_it_does: str) -> None:
    """Mark this test a strict xfail when ``when`` (running on the stand-in)."""
    if when:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason=f"mongo-java-server: {what_it_does}")
        )


def _stream(coll: Collection[Doc], **kwargs: Any) -> ChangeStream[Doc]:
    """A change stream from an explicit position, as capture opens one (tailer._tail)."""
    start = cluster_time_now(coll.database.client, after_past=True)
    return coll.watch(start_at_operation_time=start, max_await_time_ms=200, **kwargs)


def _events(stream: ChangeStream[Doc], n: int, timeout: float = 30) -> list[Doc]:
    """The next ``n`` events of ``stream`` (fails after ``timeout`` seconds)."""
    out: list[Doc] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} events arrived: {out}"
        change = stream.try_next()
        if change is not None:
            out.append(change)
    return out


# -- comparison operators and the version guard -------------------------------------


@pytest.fixture
def versions(db: Database[Doc]) -> Collection[Doc]:
    """Documents whose ``v`` is a number, missing, a string and null."""
    coll = db["versions"]
    coll.insert_many([{"_id": 1, "v": 5}, {"_id": 2}, {"_id": 3, "v": "x"}, {"_id": 4, "v": None}])
    return coll


def test_comparison_operators_skip_missing_and_other_type_fields(
    versions: Collection[Doc],
) -> None:
    """$lt/$gt match only numbers (no missing, string or null v): why sink.py's guard is not $lt."""
    assert sorted(d["_id"] for d in versions.find({"v": {"$lt": 10}})) == [1]
    assert sorted(d["_id"] for d in versions.find({"v": {"$gt": 0}})) == [1]
    assert sorted(d["_id"] for d in versions.find({"v": {"$lt": "z"}})) == [3]


def test_not_gte_matches_missing_null_and_other_type_fields(versions: Collection[Doc]) -> None:
    """$not: {$gte: v} matches a lower, missing, null or non-number v: sink._filter_guarded."""
    found = sorted(d["_id"] for d in versions.find({"v": {"$not": {"$gte": 10}}}))
    assert found == [1, 2, 3, 4]
    assert sorted(d["_id"] for d in versions.find({"v": {"$not": {"$gte": 5}}})) == [2, 3, 4]


def _losing_guarded_upsert(coll: Collection[Doc]) -> Doc:
    """The write error of sink._filter_guarded's upsert losing to a newer document."""
    coll.insert_one({"_id": 1, "_sm": {"v": Int64(10)}})
    guard = {"_id": 1, "_sm.v": {"$not": {"$gte": Int64(5)}}}
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write(
            [ReplaceOne(guard, {"_id": 1, "_sm": {"v": Int64(5)}}, upsert=True)], ordered=False
        )
    assert coll.find_one({"_id": 1}) == {"_id": 1, "_sm": {"v": 10}}, "the older write landed"
    errors: list[Doc] = info.value.details["writeErrors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_losing_guarded_upsert_fails_duplicate_key_on_the_id_index(db: Database[Doc]) -> None:
    """A stale upsert is 11000 naming index _id_ in errmsg: write_errors.is_id_race ("stale")."""
    err = _losing_guarded_upsert(db["guarded"])
    assert err["code"] == 11000
    assert "index: _id_ " in err["errmsg"]


def test_losing_guarded_upsert_reports_key_pattern_id(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """MongoDB's 11000 carries keyPattern {_id: 1}, what write_errors.is_id_race reads first."""
    _deviation(
        request,
        _on_stand_in(client),
        "no keyPattern/keyValue in duplicate-key write errors; only errmsg names the "
        "index ('index: _id_ dup key: { _id: 1 }')",
    )
    err = _losing_guarded_upsert(db["guarded"])
    assert err.get("keyPattern") == {"_id": 1}
    assert err.get("keyValue") == {"_id": 1}


def _secondary_index_duplicate(coll: Collection[Doc]) -> Doc:
    coll.create_index("email", unique=True, name="email_1")
    coll.insert_one({"_id": 1, "email": "a@example.com"})
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write([InsertOne({"_id": 2, "email": "a@example.com"})], ordered=False)
    err: Doc = info.value.details["writeErrors"][0]
    assert err["code"] == 11000
    return err


def test_duplicate_on_a_secondary_unique_index_names_that_index(db: Database[Doc]) -> None:
    """errmsg names email_1, not _id_: write_errors.is_id_race says "conflict", not "stale"."""
    err = _secondary_index_duplicate(db["people"])
    assert "index: email_1 " in err["errmsg"]
    assert "index: _id_ " not in err["errmsg"]


def test_duplicate_on_a_secondary_unique_index_reports_its_key_pattern(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """keyPattern {email: 1}: write_errors.duplicate_reason names the index and key from it."""
    _deviation(request, _on_stand_in(client), "no keyPattern/keyValue in duplicate-key errors")
    err = _secondary_index_duplicate(db["people"])
    assert err.get("keyPattern") == {"email": 1}
    assert err.get("keyValue") == {"email": "a@example.com"}


# -- _id order across BSON types ----------------------------------------------------


@pytest.fixture
def typed_ids(db: Database[Doc]) -> Collection[Doc]:
    """One document per BSON type an _id can hold."""
    coll = db["typed"]
    coll.insert_many([{"_id": i} for i in _IDS_IN_BSON_ORDER])
    return coll


def test_gt_continues_only_within_the_operand_type_bracket(typed_ids: Collection[Doc]) -> None:
    """{_id: {$gt: x}} stops at the end of x's type (MinKey aside): id_order.after_id_filters."""
    assert [d["_id"] for d in typed_ids.find({"_id": {"$gt": 1}}).sort("_id", 1)] == [
        2.5,
        3,
        Decimal128("4.5"),
    ]
    assert [d["_id"] for d in typed_ids.find({"_id": {"$gt": "a"}})] == ["b"]
    assert list(typed_ids.find({"_id": {"$gt": ObjectId("65a000000000000000000001")}})) == []
    # MinKey and MaxKey are not bracketed: every other type is above MinKey, below MaxKey.
    assert typed_ids.count_documents({"_id": {"$gt": MinKey()}}) == len(_IDS_IN_BSON_ORDER) - 1
    assert typed_ids.count_documents({"_id": {"$lt": MaxKey()}}) == len(_IDS_IN_BSON_ORDER) - 1


def test_nan_id_sorts_before_every_number(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """NaN is the lowest number: id_order.id_cmp and the snapshot's range filters assume it."""
    _deviation(
        request,
        _on_stand_in(client),
        "NaN sorts after every number (MongoDB: before -Infinity), so a resumed range scan "
        "on the stand-in can pass a NaN _id",
    )
    coll = db["nan_ids"]
    coll.insert_many([{"_id": 1}, {"_id": float("nan")}, {"_id": float("-inf")}, {"_id": -5}])
    served = [d["_id"] for d in coll.find().sort("_id", 1)]
    assert served[0] != served[0]  # NaN first
    assert served[1:] == [float("-inf"), -5, 1]
    ours = sorted(served, key=functools.cmp_to_key(id_cmp))
    assert ours[0] != ours[0]  # and id_order agrees


def test_sort_orders_ids_in_bson_type_order(typed_ids: Collection[Doc]) -> None:
    """Sorting by _id follows BSON type order, as id_order.id_cmp (reconcile, snapshot) assumes."""
    served = [d["_id"] for d in typed_ids.find().sort("_id", 1)]
    assert [type(v).__name__ for v in served] == [
        type(v).__name__ for v in sorted(served, key=functools.cmp_to_key(id_cmp))
    ]
    assert [type_rank(v) for v in served] == sorted(type_rank(v) for v in _IDS_IN_BSON_ORDER)


#: One {_id: {$type: [aliases]}} filter per bracket after MinKey's, as after_id_filters gives them.
_TYPE_FILTERS = [f for f in after_id_filters(MinKey()) if "$type" in f["_id"]]


@pytest.mark.parametrize(
    "type_filter", _TYPE_FILTERS, ids=[",".join(f["_id"]["$type"]) for f in _TYPE_FILTERS]
)
def test_type_aliases_of_after_id_filters_select_each_bracket(
    typed_ids: Collection[Doc],
    type_filter: Doc,
    client: MongoClient[Doc],
    request: pytest.FixtureRequest,
) -> None:
    """Each $type filter of id_order.after_id_filters selects exactly its bracket's ids."""
    _deviation(
        request,
        _on_stand_in(client) and type_filter["_id"]["$type"] == ["regex"],
        "{$type: 'regex'} matches no regular-expression _id (sorting still places them)",
    )
    found = [d["_id"] for d in typed_ids.find(type_filter)]
    ranks = {type_rank(v) for v in found}
    expected = [v for v in _IDS_IN_BSON_ORDER if type_rank(v) in ranks]
    assert found, type_filter
    assert len(ranks) == 1, (type_filter, found)
    assert len(found) == len(expected), (type_filter, found, expected)


def test_after_id_filters_resume_a_scan_across_brackets(db: Database[Doc]) -> None:
    """Running after_id_filters(x) in order yields every later _id: tailer._snapshot's resume."""
    ids = [v for v in _IDS_IN_BSON_ORDER if not isinstance(v, Regex)]  # regex: test above
    coll = db["scan"]
    coll.insert_many([{"_id": i} for i in ids])
    for at, last in enumerate(ids):
        rest = [d["_id"] for q in after_id_filters(last) for d in coll.find(q).sort("_id", 1)]
        assert [type_rank(v) for v in rest] == [type_rank(v) for v in ids[at + 1 :]], last
        assert len(rest) == len(ids) - at - 1, (last, rest)


# -- change streams -------------------------------------------------------------------


def test_update_lookup_returns_the_document_as_at_lookup_time(db: Database[Doc]) -> None:
    """The first update's fullDocument already shows the second: events.change_identity."""
    coll = db["lookup"]
    with _stream(coll, full_document="updateLookup") as stream:
        coll.insert_one({"_id": 1, "a": 0})
        coll.update_one({"_id": 1}, {"$set": {"a": 1}})
        coll.update_one({"_id": 1}, {"$set": {"a": 2}})
        insert, first, second = _events(stream, 3)
    assert insert["operationType"] == "insert"
    assert first["fullDocument"] == {"_id": 1, "a": 2}
    assert second["fullDocument"] == {"_id": 1, "a": 2}


def test_update_lookup_of_a_deleted_document_is_null(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """An update read after its document's delete has fullDocument null: change_identity."""
    _deviation(
        request,
        _on_stand_in(client),
        "fullDocument of an update whose document is gone is the update's $set/$unset "
        "fields (or {} for a replacement), not null",
    )
    coll = db["lookup"]
    coll.insert_one({"_id": 1, "a": 0})
    with _stream(coll, full_document="updateLookup") as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": 1}})
        coll.delete_one({"_id": 1})
        update, delete = _events(stream, 2)
    assert update["operationType"] == "update"
    assert update["fullDocument"] is None
    assert delete["operationType"] == "delete"


def test_idle_getmore_advances_post_batch_resume_token(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """An empty batch carries a newer postBatchResumeToken: tailer._follow checkpoints it."""
    _deviation(
        request,
        _on_stand_in(client) and not _stand_in_marker(client).get("postBatchResumeToken"),
        "change-stream replies carry no postBatchResumeToken (the deploy/local "
        "launcher's BoundedOplog adds it)",
    )
    start = cluster_time_now(client, after_past=True)
    reply = db.command(
        "aggregate",
        "quiet",
        pipeline=[{"$changeStream": {"startAtOperationTime": start}}],
        cursor={},
    )
    cursor_id = reply["cursor"]["id"]
    tokens = [reply["cursor"].get("postBatchResumeToken")]
    deadline = time.monotonic() + 30
    try:
        while tokens[-1] is None or tokens[-1] == tokens[0]:
            assert time.monotonic() < deadline, f"the idle token never advanced: {tokens}"
            db["elsewhere"].insert_one({"n": 1})  # the oplog moves, the watched collection not
            more = db.command("getMore", cursor_id, collection="quiet", maxTimeMS=500)
            assert more["cursor"]["nextBatch"] == []
            tokens.append(more["cursor"].get("postBatchResumeToken"))
    finally:
        db.command("killCursors", "quiet", cursors=[cursor_id])
    assert tokens[0] is not None


def test_transaction_events_share_cluster_time_in_resume_token_order(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """A transaction's events share one clusterTime; tokens order them: events.cluster_time."""
    _deviation(
        request,
        _on_stand_in(client),
        "no sessions or transactions (PyMongo: 'Sessions are not supported by this deployment')",
    )
    coll = db["txn"]
    coll.insert_one({"_id": "before"})  # a transaction cannot create the collection pre-4.4
    with _stream(coll) as stream:
        with client.start_session() as session, session.start_transaction():
            for i in range(3):
                coll.insert_one({"_id": i}, session=session)
        events = _events(stream, 3)
    assert [e["documentKey"]["_id"] for e in events] == [0, 1, 2]
    assert len({e["clusterTime"] for e in events}) == 1
    tokens = [e["_id"]["_data"] for e in events]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


def test_resume_tokens_increase_in_stream_order(db: Database[Doc]) -> None:
    """Outside transactions too, token order is stream order: the checkpoint's position order."""
    coll = db["order"]
    with _stream(coll) as stream:
        for i in range(5):
            coll.insert_one({"_id": i})
        events = _events(stream, 5)
    assert [e["documentKey"]["_id"] for e in events] == list(range(5))
    tokens = [e["_id"]["_data"] for e in events]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 5
    times = [e["clusterTime"] for e in events]
    assert times == sorted(times)


def test_rejected_inserts_emit_no_change_event(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """Only inserted documents become events: capture would copy a rejected one to the target."""
    _deviation(
        request,
        _on_stand_in(client) and _stand_in_oplog(client) != "bounded",
        "its own oplog logs every document of an insert command, also those rejected "
        "(duplicate key) or never tried after an ordered batch's error: phantom insert "
        "events; the deploy/local launcher's BoundedOplog logs only what was inserted",
    )
    coll = db["phantom"]
    coll.insert_one({"_id": 1, "v": "original"})
    with _stream(coll, full_document="updateLookup") as stream:
        with pytest.raises(BulkWriteError):
            coll.insert_many([{"_id": 1, "v": "duplicate"}, {"_id": 2, "v": "never tried"}])
        with pytest.raises(BulkWriteError):
            coll.insert_many([{"_id": 1, "v": "duplicate"}, {"_id": 3}], ordered=False)
        coll.insert_one({"_id": 4})
        events = _events(stream, 2)
    assert [(e["operationType"], e["documentKey"]["_id"]) for e in events] == [
        ("insert", 3),
        ("insert", 4),
    ]
    assert coll.find_one({"_id": 1}) == {"_id": 1, "v": "original"}


def test_change_events_carry_ns(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """Every event names its namespace: connect formats and events.change_identity read it."""
    _deviation(request, _on_stand_in(client), "change events have no ns field")
    coll = db["ns"]
    with _stream(coll) as stream:
        coll.insert_one({"_id": 1})
        (event,) = _events(stream, 1)
    assert event["ns"] == {"db": db.name, "coll": "ns"}


def test_update_events_carry_update_description_and_id_key(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """An update has updateDescription and documentKey {_id}: events.change_identity's key."""
    _deviation(
        request,
        _on_stand_in(client),
        "update events have no updateDescription, and documentKey holds the update "
        "specification ({$set: ...}) instead of {_id}",
    )
    coll = db["upd"]
    coll.insert_one({"_id": 1, "a": 0, "b": 0})
    with _stream(coll) as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": 1}, "$unset": {"b": ""}})
        (event,) = _events(stream, 1)
    assert event["operationType"] == "update"
    assert event["documentKey"] == {"_id": 1}
    assert event["updateDescription"]["updatedFields"] == {"a": 1}
    assert event["updateDescription"]["removedFields"] == ["b"]


def test_replace_arrives_as_replace_with_its_document(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """replace_one is a 'replace' event whose fullDocument is the replacement: tailer._handle."""
    _deviation(request, _on_stand_in(client), "a replacement arrives as operationType 'update'")
    coll = db["repl"]
    coll.insert_one({"_id": 1, "a": 0})
    with _stream(coll) as stream:
        coll.replace_one({"_id": 1}, {"b": 1})
        (event,) = _events(stream, 1)
    assert event["operationType"] == "replace"
    assert event["fullDocument"] == {"_id": 1, "b": 1}
    assert event["documentKey"] == {"_id": 1}


def test_watch_without_a_start_position_sees_later_writes(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """watch() with no position works on MongoDB; capture still always passes one (tailer._tail)."""
    _deviation(
        request,
        _on_stand_in(client) and not _stand_in_marker(client).get("postBatchResumeToken"),
        "replies carry no operationTime, so PyMongo's watch() without a start position "
        "fails ('Expected field operationTime missing from command response'); with the "
        "deploy/local launcher's postBatchResumeToken PyMongo needs none",
    )
    coll = db["nopos"]
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"_id": 1})
        (event,) = _events(stream, 1)
    assert event["documentKey"] == {"_id": 1}


def test_replies_carry_cluster_time_and_operation_time(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """Replies gossip $clusterTime and operationTime: mongo.cluster_time_now reads them."""
    _deviation(
        request,
        _on_stand_in(client),
        "replies carry neither $clusterTime nor operationTime "
        "(mongo.cluster_time_now falls back to Timestamp(wall-clock seconds, 0))",
    )
    db["t"].insert_one({"_id": 1})
    reply = db.command({"find": "t", "filter": {}, "readConcern": {"level": "majority"}})
    assert isinstance(reply["operationTime"], Timestamp)
    assert isinstance(reply["$clusterTime"]["clusterTime"], Timestamp)


def test_majority_read_from_the_primary_sees_an_acknowledged_majority_write(
    db: Database[Doc],
) -> None:
    """A primary, majority-read-concern read sees a w: majority write: the snapshot's read."""
    coll = db.get_collection("snap", write_concern=WriteConcern(w="majority"))
    coll.insert_one({"_id": 1, "v": 1})
    reader = db.get_collection(
        "snap", read_preference=ReadPreference.PRIMARY, read_concern=ReadConcern("majority")
    )
    assert reader.find_one({"_id": 1}) == {"_id": 1, "v": 1}


def test_unsatisfiable_write_concern_reports_write_concern_errors(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """w: 50 applies on the primary yet reports writeConcernErrors (write_concern_failure).

    No replica set has 50 data-bearing members, so MongoDB answers at once with a
    writeConcernError (UnsatisfiableWriteConcern, code 100) or after wtimeout
    (WriteConcernFailed, 64); either way the write itself was applied on the primary.
    """
    _deviation(
        request, _on_stand_in(client), "write concern is ignored: a w: 50 write is acknowledged"
    )
    coll = db.get_collection("wc", write_concern=WriteConcern(w=50, wtimeout=2000))
    with pytest.raises(BulkWriteError) as info:
        coll.bulk_write([UpdateOne({"_id": 1}, {"$set": {"v": 1}}, upsert=True)])
    concern = info.value.details["writeConcernErrors"]
    assert concern, info.value.details
    assert concern[0]["code"] in (64, 100), concern
    assert db["wc"].find_one({"_id": 1}) == {"_id": 1, "v": 1}


def test_change_stream_from_before_the_oplog_fails_history_lost(
    db: Database[Doc], client: MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """Starting before the oldest oplog entry is error 286: tailer.history_lost_error."""
    _deviation(
        request,
        _on_stand_in(client) and _stand_in_oplog(client) != "bounded",
        "its own oplog (CollectionBackedOplog) never drops history and replays from the "
        "start; the deploy/local launcher's BoundedOplog answers 286",
    )
    coll = db["lost"]
    coll.insert_one({"_id": 1})
    early = Timestamp(1, 1)  # 1970: before any oplog's first entry
    with (
        pytest.raises(OperationFailure) as info,
        coll.watch(start_at_operation_time=early, max_await_time_ms=200) as stream,
    ):
        stream.try_next()
    assert info.value.code == 286, info.value.details
    assert (info.value.details or {}).get("codeName") == "ChangeStreamHistoryLost"


def test_resume_after_a_drop_event_yields_invalidate(db: Database[Doc]) -> None:
    """Resuming after the drop event gives invalidate: tailer records "stopped", never resumes."""
    coll = db["dropped"]
    with _stream(coll) as stream:
        coll.insert_one({"_id": 1})
        coll.drop()
        insert, drop = _events(stream, 2)
    assert (insert["operationType"], drop["operationType"]) == ("insert", "drop")
    try:
        with coll.watch(resume_after=drop["_id"], max_await_time_ms=200) as resumed:
            (event,) = _events(resumed, 1)
    except PyMongoError as exc:  # pragma: no cover - shows the server's answer on failure
        pytest.fail(f"resuming after the drop failed instead of invalidating: {exc}")
    assert event["operationType"] == "invalidate"
