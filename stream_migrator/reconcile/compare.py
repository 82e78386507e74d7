"""Full compare: transform every source document and compare it with the target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.collection import Collection

from stream_migrator.errors import TransformError
from stream_migrator.spec import META_FIELD, MigrationSpec
from stream_migrator.spec.errors import FilteredOut


@dataclass
class CompareReport:
    """Outcome of a full compare; ``mismatches`` = missing + extra + different."""

    source_count: int = 0
    target_count: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    untransformable: int = 0
    filtered: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return self.missing + self.extra + self.different

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def full_compare(
    source: Collection[dict[str, Any]],
    target: Collection[dict[str, Any]],
    spec: MigrationSpec,
) -> CompareReport:
    """Walk both collections in _id order (a merge join) and classify every key.

    Source documents the spec rejects are counted as ``untransformable``: they are
    in quarantine, not silently missing.
    """
    report = CompareReport()
    # Explicit batches: mongo-java-server otherwise answers one getMore with the whole
    # rest of the collection, which passes the 48 MB message limit at ~200,000 documents.
    src = source.find({}).sort("_id", 1).batch_size(2_000)
    tgt = target.find({}).sort("_id", 1).batch_size(2_000)
    s_doc = next(src, None)
    t_doc = next(tgt, None)
    while s_doc is not None or t_doc is not None:
        if t_doc is None or (s_doc is not None and _before(s_doc["_id"], t_doc["_id"])):
            assert s_doc is not None
            report.source_count += 1
            if _expected(spec, s_doc, report) is not None:
                report.missing += 1
                report._example(f"missing in target: _id={s_doc['_id']!r}")
            s_doc = next(src, None)
        elif s_doc is None or _before(t_doc["_id"], s_doc["_id"]):
            report.target_count += 1
            report.extra += 1
            report._example(f"extra in target: _id={t_doc['_id']!r}")
            t_doc = next(tgt, None)
        else:
            report.source_count += 1
            report.target_count += 1
            expected = _expected(spec, s_doc, report)
            actual = {k: v for k, v in t_doc.items() if k != META_FIELD}
            if expected is not None and expected != actual:
                report.different += 1
                report._example(f"different: _id={s_doc['_id']!r}")
            s_doc, t_doc = next(src, None), next(tgt, None)
    return report


def _expected(
    spec: MigrationSpec, doc: dict[str, Any], report: CompareReport
) -> dict[str, Any] | None:
    try:
        return spec.migrate(doc)  # transform + target schema, as the worker writes it
    except FilteredOut:
        report.filtered += 1  # the spec leaves it out: the target must not have it
        return None
    except TransformError:
        report.untransformable += 1
        return None


def _before(a: Any, b: Any) -> bool:
    """_id order as the server sorts it, for the id types a merge join meets in practice."""
    try:
        return bool(a < b)
    except TypeError:
        return type(a).__name__ < type(b).__name__
