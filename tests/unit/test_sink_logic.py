"""Pure logic of the target writer: per-document coalescing."""

from __future__ import annotations

from stream_migrator.interfaces import TargetWrite
from stream_migrator.transform.sink import coalesce


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
