"""Buckets of the full pass: ``(id, hash, hash)`` entries of N consecutive ids, never documents.

So memory is O(bucket) whatever the collection size. A target copy byte-identical
to the migrated document (``compare.agrees_exactly``) gets one marker on both
sides: neither a canonical encoding nor a hash is computed; any other pair gets
canonical hashes. A bucket whose entries all agree is clean; otherwise only its
differing ids become *suspects* in the run store, and the bucket's end is saved
as the segment's resume point.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stream_migrator.canonical import doc_hash
from stream_migrator.reconcile.canonical import leaf_paths
from stream_migrator.reconcile.compare import Expectation, StoredDoc, agrees_exactly, merge_join
from stream_migrator.reconcile.counts import ScanCounts
from stream_migrator.reconcile.sides import Sides

_UNTRANSFORMABLE = b"\x00untransformable"  # hash marker of a document in quarantine
#: Both sides' "hash" of a target copy byte-identical to the migrated document: equal
#: entries are all a bucket needs of it, so nothing is hashed (no BLAKE2 output is 5 bytes).
_SAME = b"\x00same"


@dataclass(slots=True)
class Entry:
    doc_id: Any
    expected: bytes | None  # hash of transform(source); None = no source document
    actual: bytes | None  # hash of target; None = no target document
    rejected: str | None = None  # the spec's reason when the source is untransformable


def entries(
    sides: Sides, src: Iterator[dict[str, Any]], tgt: Iterator[StoredDoc], scan: ScanCounts
) -> Iterator[Entry]:
    """The merge-join of both sorted sides as hash entries, counted into ``scan``."""
    coverage = scan.coverage
    for s_doc, t_doc in merge_join(src, tgt):
        if s_doc is None:
            assert t_doc is not None
            yield Entry(t_doc.doc_id, None, _actual_hash(t_doc.decode(), scan))
            continue
        scan.source_count += 1
        expected = sides.expect(s_doc)
        if t_doc is not None and agrees_exactly(expected, t_doc):
            # The usual pair, inline: a byte-identical copy, no canonical encoding.
            assert expected.doc is not None
            scan.target_count += 1
            coverage.update(leaf_paths(expected.doc))
            yield Entry(s_doc["_id"], _SAME, _SAME)
        else:
            yield _source_entry(s_doc, expected, t_doc, scan)


def _source_entry(
    doc: dict[str, Any], expected: Expectation, t_doc: StoredDoc | None, scan: ScanCounts
) -> Entry:
    actual = None if t_doc is None else _actual_hash(t_doc.decode(), scan)
    if expected.rejected is not None:
        scan.untransformable += 1
        return Entry(doc["_id"], _UNTRANSFORMABLE, actual, expected.rejected)
    if expected.doc is None:
        scan.filtered += 1
        # Filtered out by the spec: no target document is expected.
        return Entry(doc["_id"], None, actual)
    return Entry(doc["_id"], doc_hash(expected.doc), actual)


def _actual_hash(doc: dict[str, Any], scan: ScanCounts) -> bytes:
    scan.target_count += 1
    scan.coverage.update(leaf_paths(doc))
    return doc_hash(doc)


def finish_bucket(sides: Sides, run_id: str, n: int, bucket: list[Entry], scan: ScanCounts) -> None:
    """Store the bucket's suspects and untransformable ids, then segment ``n``'s resume point."""
    scan.buckets += 1
    sides.store.add_untransformable(
        run_id, [(e.doc_id, e.rejected) for e in bucket if e.rejected is not None]
    )
    # Both sides' hashes of every id are at hand: compared entry by entry (what
    # comparing two bucket hashes over them would say, without a collision). An
    # untransformable source is in quarantine, not a divergence: it never drills.
    suspects = [e.doc_id for e in bucket if e.expected not in (_UNTRANSFORMABLE, e.actual)]
    if suspects:
        scan.drilled += 1
        sides.store.add_pending(run_id, suspects)
    sides.store.save(
        run_id,
        **{
            f"segments.{n}.last_id": bucket[-1].doc_id,
            f"segments.{n}.has_last": True,
            f"segments.{n}.scan": scan.to_doc(),
            "buckets": scan.buckets,  # of this segment: a liveness hint for operators
        },
    )
