"""Pure logic: capture folds the events of one transaction and never checkpoints inside one.

MongoDB's multi-document transactions cannot run on the stand-in (mongo-java-server
has none), so these events are shaped as MongoDB's change-events page documents
them: ``_id`` resume token, ``operationType``, ``clusterTime`` (the commit time,
shared by every event of the transaction), ``documentKey``, ``fullDocument``
(``updateLookup``), ``lsid`` and ``txnNumber``.
"""

from __future__ import annotations

import random
from typing import Any

from bson import Binary, Int64, ObjectId, Timestamp

from stream_migrator import events
from stream_migrator.capture.transactions import TransactionFolder, fold

_LSID = {"id": Binary(b"\x01" * 16, 4), "uid": Binary(b"\x02" * 32, 0)}
_tokens = iter(range(1, 10**9))


def _event(
    op: str,
    doc_id: Any,
    at: Timestamp,
    doc: dict[str, Any] | None = None,
    *,
    txn: int | None = None,
) -> dict[str, Any]:
    change: dict[str, Any] = {
        "_id": {"_data": f"82{next(_tokens):08X}"},
        "operationType": op,
        "clusterTime": at,
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": doc_id},
    }
    if op != "delete":
        change["fullDocument"] = {"_id": doc_id, **(doc or {})}
    if op == "update":
        change["updateDescription"] = {
            "updatedFields": doc or {},
            "removedFields": [],
            "truncatedArrays": [],
        }
    if txn is not None:
        change["lsid"] = _LSID
        change["txnNumber"] = Int64(txn)
    return change


T1, T2, T3 = Timestamp(1_800_000_000, 1), Timestamp(1_800_000_000, 2), Timestamp(1_800_000_001, 1)


def test_fold_insert_then_update_in_one_transaction_keeps_update() -> None:
    """insert + update of one document in a transaction emit only the update's document."""
    ins = _event("insert", 1, T1, {"total": 1}, txn=3)
    upd = _event("update", 1, T1, {"total": 2}, txn=3)
    assert fold([ins, upd]) == [upd]


def test_fold_insert_then_delete_in_one_transaction_keeps_delete() -> None:
    """insert + delete of one document in a transaction emit only the delete."""
    ins = _event("insert", "a", T1, {"total": 1}, txn=3)
    dele = _event("delete", "a", T1, txn=3)
    assert fold([ins, dele]) == [dele]


def test_fold_delete_then_insert_in_one_transaction_keeps_insert() -> None:
    """delete + insert of one document in a transaction emit only the insert."""
    oid = ObjectId()
    dele = _event("delete", oid, T1, txn=4)
    ins = _event("insert", oid, T1, {"total": 9}, txn=4)
    assert fold([dele, ins]) == [ins]


def test_fold_distinct_documents_in_one_transaction_keeps_all_in_order() -> None:
    """Events of different documents in one transaction all pass, in stream order."""
    group = [
        _event("insert", 1, T1, txn=5),
        _event("update", 2, T1, {"x": 1}, txn=5),
        _event("insert", 3, T1, txn=5),
        _event("update", 1, T1, {"x": 2}, txn=5),
    ]
    assert fold(group) == [group[1], group[2], group[3]]


def test_fold_keyless_update_is_never_folded() -> None:
    """An update whose document vanished (no usable key) is left for the tailer to judge."""
    keyless = {"_id": {"_data": "82FF"}, "operationType": "update", "clusterTime": T1}
    ins = _event("insert", 1, T1)
    assert fold([keyless, ins, dict(keyless)]) == [keyless, ins, keyless]


def test_folder_single_writes_pass_unchanged_at_once() -> None:
    """Writes outside a transaction are released as they arrive, none folded."""
    folder = TransactionFolder({"_data": "start"})
    a, b, c = _event("insert", 1, T1), _event("update", 1, T2, {"x": 1}), _event("delete", 1, T3)
    assert folder.add(a) == [a]
    assert folder.position == a["_id"]
    assert folder.add(b) == [b]
    assert folder.position == b["_id"]
    assert folder.add(c) == [c]
    assert folder.idle({"_data": "pbrt"}) == []
    assert folder.position == {"_data": "pbrt"}
    assert folder.folded == 0


def test_folder_plain_write_at_the_held_time_joins_the_group() -> None:
    """A non-transaction event sharing the held group's time (another shard) never splits it."""
    folder = TransactionFolder(None)
    txn = [_event("insert", 1, T1, txn=4), _event("update", 1, T1, {"total": 2}, txn=4)]
    other_shard = _event("insert", 2, T1)
    assert folder.add(txn[0]) == []
    assert folder.add(other_shard) == []
    assert folder.add(txn[1]) == []
    assert folder.position is None
    assert folder.idle({"_data": "pbrt"}) == [other_shard, txn[1]]


def test_folder_position_never_lands_inside_a_transaction() -> None:
    """While a transaction's events are held, the position stays before its first event."""
    before = _event("insert", 9, T1)
    txn = [_event("insert", 1, T2, txn=7), _event("update", 1, T2, {"total": 2}, txn=7)]
    folder = TransactionFolder(None)
    assert folder.add(before) == [before]
    assert folder.add(txn[0]) == []
    assert folder.position == before["_id"]
    assert folder.add(txn[1]) == []
    assert folder.held
    assert folder.position == before["_id"], "a checkpoint here would lose the insert"
    after = _event("insert", 2, T3)
    assert folder.add(after) == [txn[1], after]
    assert folder.position == after["_id"]
    assert folder.folded == 1


def test_folder_idle_stream_completes_group_and_advances_token() -> None:
    """An empty answer completes the held group; an idle stream's post-batch token is kept."""
    folder = TransactionFolder({"_data": "open"})
    assert folder.idle({"_data": "pbrt1"}) == []
    assert folder.position == {"_data": "pbrt1"}, "an idle stream's token must be checkpointed"
    ins = _event("insert", 1, T1, txn=1)
    dele = _event("delete", 1, T1, txn=1)
    folder.add(ins)
    folder.add(dele)
    assert folder.idle({"_data": "pbrt2"}) == [dele]
    assert not folder.held
    assert folder.position == {"_data": "pbrt2"}
    assert folder.idle(None) == []
    assert folder.position == {"_data": "pbrt2"}


def test_folder_never_emits_two_versions_equal_for_one_document() -> None:
    """Random streams with transactions and idle gaps: each (document, version) emitted once."""
    rng = random.Random(10)
    for _ in range(200):
        folder = TransactionFolder(None)
        emitted: list[dict[str, Any]] = []
        last_state: dict[int, str] = {}
        seconds = 1_800_000_000
        for inc in range(1, rng.randint(2, 30)):
            at = Timestamp(seconds, inc)
            for _ in range(rng.choice([1, 1, 2, 3, 5])):  # >1: one transaction
                doc_id = rng.randint(1, 4)
                op = rng.choice(["insert", "update", "replace", "delete"])
                emitted += folder.add(_event(op, doc_id, at, {"n": inc}, txn=inc))
                last_state[doc_id] = op
            if rng.random() < 0.3:
                emitted += folder.idle({"_data": f"pbrt{inc}"})
        emitted += folder.idle({"_data": "end"})
        pairs = [(e["documentKey"]["_id"], events.version_of(e["clusterTime"])) for e in emitted]
        assert len(pairs) == len(set(pairs)), pairs
        final = {e["documentKey"]["_id"]: e["operationType"] for e in emitted}
        assert final == last_state
