"""Pure logic of the target writer: per-document coalescing."""

from __future__ import annotations

from stream_migrator.interfaces import TargetWrite
from stream_migrator.transform.sink import coalesce, echo_mark, is_marked_echo


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
