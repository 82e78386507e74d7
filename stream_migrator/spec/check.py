"""``spec check``: run a spec over sample documents and prove ``inverse(transform(d)) == d``.

Each document is transformed twice (a different result means the spec is not
deterministic), its input is checked for mutation (transforms must be pure),
the result is validated against the target schema, and the inverse must give
back the source document. Equality is type-strict (an int is not a double, a
bool is not an int) and ignores key order, which MongoDB readers do not see
through drivers' dict access and which a rename changes by construction.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_migrator.errors import TransformError
from stream_migrator.spec.avro import AvroSchema
from stream_migrator.spec.avro_generate import example_values, generate
from stream_migrator.spec.casts import type_name
from stream_migrator.spec.model import META_FIELD, MigrationSpec, step_kind, step_reversible

_SHOWN = 10


@dataclass
class CheckReport:
    """What ``spec check`` found; ``ok`` is False when any document failed the round trip."""

    spec: MigrationSpec
    sample: str
    checked: int = 0
    transformed: int = 0
    filtered: int = 0
    rejected: int = 0
    target_violations: int = 0
    source_violations: int = 0
    round_trips: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Why there may be no document, printed when there is none.
    when_empty: str = "give --mongo-uri, or add `examples` or a source schema"

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def empty(self) -> bool:
        """Nothing was checked: no failure, but no proof either (exit 1 unless --allow-empty)."""
        return self.checked == 0

    def _note(self, text: str) -> None:
        if len(self.notes) < _SHOWN:
            self.notes.append(text)


def check_documents(
    spec: MigrationSpec,
    docs: list[dict[str, Any]],
    sample: str,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Run every check on every document (see the module docstring).

    ``progress(done, total)`` is called after each document (``spec check --sample``
    on a large sample shows a bar or logs how far it is).
    """
    report = CheckReport(spec, sample)
    for doc in docs:
        report.checked += 1
        _check_one(spec, doc, report)
        if progress is not None:
            progress(report.checked, len(docs))
    return report


def _check_one(spec: MigrationSpec, doc: dict[str, Any], report: CheckReport) -> None:
    label = f"_id={doc.get('_id')!r}"
    if spec.source_schema is not None:
        problems = spec.source_schema.violations(doc, limit=1)
        if problems:
            report.source_violations += 1
            report._note(f"{label}: source schema {spec.source_schema.name}: {problems[0]}")
    before = copy.deepcopy(doc)
    try:
        target = spec.transform(doc)
    except TransformError as exc:
        report.rejected += 1
        report._note(f"{label}: rejected (would go to quarantine): {exc}")
        return
    if target is None:
        report.filtered += 1
        return
    report.transformed += 1
    if (changed := diff(before, doc)) is not None:
        report.failures.append(f"{label}: transform modified its input: {changed}")
        return
    if (unstable := diff(target, spec.transform(doc))) is not None:
        report.failures.append(f"{label}: transform is not deterministic: {unstable}")
        return
    try:
        spec.validate_target(target)
    except TransformError as exc:
        report.target_violations += 1
        report._note(f"{label}: target {exc}")
    try:
        back = spec.inverse(target)
    except TransformError as exc:
        report.failures.append(f"{label}: inverse failed: {exc}")
        return
    source = {k: v for k, v in doc.items() if k != META_FIELD}
    problem = diff(source, back)
    if problem is None:
        report.round_trips += 1
    else:
        report.failures.append(f"{label}: inverse(transform(d)) != d: {problem}")


def diff(a: Any, b: Any, path: str = "") -> str | None:  # noqa: PLR0911 - one per shape
    """The first difference between two documents (type-strict, key order ignored), or None."""
    where = path or "(document)"
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            sub = f"{path}.{key}" if path else str(key)
            if key not in b:
                return f"{sub}: was {_show(a[key])}, came back missing"
            found = diff(a[key], b[key], sub)
            if found is not None:
                return found
        for key in b:
            if key not in a:
                sub = f"{path}.{key}" if path else str(key)
                return f"{sub}: was missing, came back {_show(b[key])}"
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: had {len(a)} items, came back with {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = diff(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if type_name(a) != type_name(b) or not _equal(a, b):
        return f"{where}: was {_show(a)}, came back {_show(b)}"
    return None


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        utc = dt.UTC
        return (a if a.tzinfo else a.replace(tzinfo=utc)) == (
            b if b.tzinfo else b.replace(tzinfo=utc)
        )
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # noqa: PLR0124 - NaN
        return True
    return bool(a == b)


def _show(value: Any) -> str:
    return f"{value!r} ({type_name(value)})"


def generated_documents(spec: MigrationSpec, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` source documents: the spec's examples first, then ones generated from the
    source schema (taking field values from the examples where they have some)."""
    docs = [copy.deepcopy(d) for d in spec.examples[:count]]
    if spec.source_schema is None:
        return docs
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not secrets
    seen = example_values(list(spec.examples))
    while len(docs) < count:
        doc = generate(spec.source_schema, rng, seen)
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def _side(ns: object, version: str, schema: AvroSchema | None, missing: str) -> str:
    """``shop.orders (schema orders.v1)``, or the version and that there is no schema."""
    where = f"{ns} " if ns else ""
    return f"{where}(schema {schema.name})" if schema else f"{where}({version}, {missing})"


def render(report: CheckReport, *, allow_empty: bool = False) -> str:
    """The human report ``spec check`` prints; its last line is the result."""
    spec = report.spec
    lines = [f"spec {spec.name} ({spec.origin or 'built in'}): valid"]
    src = _side(spec.source, spec.source_version, spec.source_schema, "no schema")
    tgt = _side(
        spec.target,
        spec.target_version,
        spec.target_schema,
        "no target schema: documents are not validated",
    )
    lines.append(f"  {src} -> {tgt}, {len(spec.steps)} steps")
    for number, step in enumerate(spec.steps, 1):
        describe = getattr(step, "describe", None)
        text = describe() if callable(describe) else step_kind(step)
        note_fn = getattr(step, "inverse_note", None)
        note = note_fn() if callable(note_fn) else ""
        status = "reversible" if step_reversible(step) else "NOT REVERSIBLE"
        lines.append(f"  step {number:<2} {text}")
        lines.append(f"           {status}" + (f": {note}" if note else ""))
    irreversible = spec.irreversible_steps()
    lines.append(
        "not reversible: "
        + (", ".join(f"step {n} ({step_kind(s)})" for n, s in irreversible) or "none")
    )
    lines.append(f"sample: {report.sample}")
    target_schema = spec.target_schema.name if spec.target_schema else "no schema"
    source_schema = spec.source_schema.name if spec.source_schema else "no schema"
    lines += [
        f"  documents          {report.checked}",
        f"  transformed        {report.transformed}",
        f"  filtered out       {report.filtered}",
        f"  rejected           {report.rejected} (would go to quarantine)",
        f"  target schema      {report.target_violations} violations ({target_schema})",
        f"  source schema      {report.source_violations} violations ({source_schema})",
        f"  round trip         {report.round_trips} of {report.transformed} documents: "
        "inverse(transform(d)) == d",
    ]
    lines += [f"  note: {n}" for n in report.notes]
    lines += [f"  FAILED {f}" for f in report.failures[:_SHOWN]]
    if len(report.failures) > _SHOWN:
        lines.append(f"  ... and {len(report.failures) - _SHOWN} more failures")
    if report.empty:
        lines.append(f"  (no documents: {report.when_empty})")
    if not report.ok:
        lines.append(f"RESULT FAILED: {len(report.failures)} documents")
    elif report.empty and allow_empty:
        lines.append("RESULT OK: 0 documents checked (--allow-empty)")
    elif report.empty:
        lines.append(
            "RESULT NOTHING CHECKED: 0 documents, so the round trip is not proven "
            "(exit 1; --allow-empty accepts that)"
        )
    else:
        lines.append("RESULT OK")
    return "\n".join(lines)
