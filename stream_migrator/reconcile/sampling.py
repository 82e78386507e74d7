"""The sampled pass: a random fraction of each side compared by ``_id`` reads, not a scan."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from stream_migrator import events
from stream_migrator.id_sample import sample_ids
from stream_migrator.reconcile.canonical import leaf_paths
from stream_migrator.reconcile.compare import classify
from stream_migrator.reconcile.counts import ScanCounts
from stream_migrator.reconcile.sides import Sides, by_id


def sample_pass(sides: Sides, run_id: str, fraction: float, scan: ScanCounts) -> int:
    """Compare a random ``fraction`` of each side; returns how many ids were examined."""
    src_total = sides.source.estimated_document_count()
    tgt_total = sides.target.estimated_document_count()
    scan.source_count, scan.target_count = src_total, tgt_total
    src_ids = sample_ids(sides.source, min(src_total, max(1, math.ceil(fraction * src_total))))
    tgt_ids = sample_ids(sides.target, min(tgt_total, max(1, math.ceil(fraction * tgt_total))))
    coverage: Counter[str] = Counter()
    size = sides.bucket_size
    total = len(src_ids) + len(tgt_ids)
    for start in range(0, len(src_ids), size):
        sides.tick(start, total)
        chunk = src_ids[start : start + size]
        targets = by_id(sides.target, chunk)
        suspects = []
        rejected: list[tuple[Any, str]] = []
        for s_doc in sides.source.find({"_id": {"$in": chunk}}):
            t_doc = targets.get(events.hashable_id(s_doc["_id"]))
            expected = sides.expect(s_doc)
            if expected.rejected is not None:
                scan.untransformable += 1
                rejected.append((s_doc["_id"], expected.rejected))
                continue
            if expected.filtered:
                scan.filtered += 1
            if classify(expected, t_doc) is not None:
                suspects.append(s_doc["_id"])
        sides.store.add_pending(run_id, suspects)
        sides.store.add_untransformable(run_id, rejected)
    for start in range(0, len(tgt_ids), size):
        sides.tick(len(src_ids) + start, total)
        chunk = tgt_ids[start : start + size]
        for t_doc in sides.target.find({"_id": {"$in": chunk}}):
            coverage.update(leaf_paths(t_doc))
        _orphan_suspects(sides, run_id, chunk)
    sides.tick(total, total)
    # Coverage counts are scaled to the whole target so shares read the same as a full run.
    scale = tgt_total / max(1, len(tgt_ids))
    scan.coverage = Counter({p: round(n * scale) for p, n in coverage.items()})
    return len(src_ids) + len(tgt_ids)


def _orphan_suspects(sides: Sides, run_id: str, ids: list[Any]) -> None:
    present = by_id(sides.source, ids, {"_id": 1})
    sides.store.add_pending(run_id, [i for i in ids if events.hashable_id(i) not in present])
