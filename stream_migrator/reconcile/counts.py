"""The counters of one compare pass, persisted with every bucket so a resumed run continues them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScanCounts:
    """Documents read per side, untransformable and filtered ones, buckets, field coverage."""

    source_count: int = 0
    target_count: int = 0
    untransformable: int = 0
    buckets: int = 0
    drilled: int = 0
    filtered: int = 0
    coverage: Counter[str] = field(default_factory=Counter)

    def to_doc(self) -> dict[str, Any]:
        return {
            "source_count": self.source_count,
            "target_count": self.target_count,
            "untransformable": self.untransformable,
            "buckets": self.buckets,
            "drilled": self.drilled,
            "filtered": self.filtered,
            # Field paths contain dots, which MongoDB field names must not: store pairs.
            "coverage": [[p, n] for p, n in self.coverage.items()],
        }

    @classmethod
    def total(cls, scans: list[ScanCounts]) -> ScanCounts:
        out = cls()
        for s in scans:
            out.source_count += s.source_count
            out.target_count += s.target_count
            out.untransformable += s.untransformable
            out.buckets += s.buckets
            out.drilled += s.drilled
            out.filtered += s.filtered
            out.coverage.update(s.coverage)
        return out

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ScanCounts:
        return cls(
            source_count=doc.get("source_count", 0),
            target_count=doc.get("target_count", 0),
            untransformable=doc.get("untransformable", 0),
            buckets=doc.get("buckets", 0),
            drilled=doc.get("drilled", 0),
            filtered=doc.get("filtered", 0),
            coverage=Counter({p: n for p, n in doc.get("coverage", [])}),
        )
