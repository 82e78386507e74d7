"""`stream-migrator spec check`: exit codes, the report, and the worker's use of the spec."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator import events
from stream_migrator.cli import main
from stream_migrator.hook_policy import ALL_HOOKS
from stream_migrator.spec import get_spec, load_spec
from stream_migrator.spec.check import check_documents, diff
from stream_migrator.transform.worker import TransformWorker

SPEC_TEXT = """\
name: lossy.v1_to_v2
source: {db: shop, collection: orders}
target: {db: shop, collection: orders_v2}
schema: null
from_version: 1
to_version: 2
steps:
  - filter: {match: {status: {$ne: archived}}}
  - drop: {field: notes}
examples:
  - {_id: 1, status: paid}
  - {_id: 2, status: paid, notes: call first}
  - {_id: 3, status: archived}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_check_builtin_orders_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped orders spec round-trips every generated document."""
    assert main(["spec", "check", "orders.v1_to_v2", "--sample", "150"]) == 0
    out = capsys.readouterr().out
    assert "not reversible: none" in out
    assert "round trip         150 of 150 documents" in out
    assert out.rstrip().endswith("RESULT OK")


def test_check_reports_lossy_step_and_failing_document_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drop without restore is listed as not reversible; the document it loses fails, exit 1."""
    assert main(["spec", "check", str(_write(tmp_path, SPEC_TEXT))]) == 1
    out = capsys.readouterr().out
    assert "not reversible: step 2 (drop)" in out
    assert "filtered out       1" in out
    assert (
        "FAILED _id=2: inverse(transform(d)) != d: notes: was 'call first' (string), "
        "came back missing"
    ) in out
    assert "RESULT FAILED: 1 documents" in out


def test_check_invalid_spec_exits_2_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid spec prints file:line problems on stderr and exits 2."""
    path = _write(
        tmp_path, SPEC_TEXT.replace("drop: {field: notes}", "cast: {field: n, to: decimel}")
    )
    assert main(["spec", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:9: step 2 (cast): unknown type 'decimel'" in err


def test_check_detects_impure_hook(tmp_path: Path) -> None:
    """A hook that mutates its input or is not deterministic fails the check."""
    (tmp_path / "impure_hooks_1.py").write_text(
        "import itertools\n_n = itertools.count()\ndef counter(doc):\n    return next(_n)\n"
    )
    path = _write(
        tmp_path,
        SPEC_TEXT.replace(
            "  - drop: {field: notes}\n",
            "  - computed: {field: n, hook: 'impure_hooks_1:counter'}\n",
        ),
    )
    report = check_documents(load_spec(path, ALL_HOOKS), [{"_id": 1}], "one")
    assert report.failures == [
        "_id=1: transform is not deterministic: n: was 0 (int), came back 1 (int)"
    ]


def test_diff_is_type_strict_and_ignores_key_order() -> None:
    """1 and 1.0 differ; {a, b} and {b, a} do not."""
    assert diff({"a": 1, "b": 2}, {"b": 2, "a": 1}) is None
    assert diff({"a": 1}, {"a": 1.0}) == "a: was 1 (int), came back 1.0 (double)"
    assert diff({"a": [1, {"b": True}]}, {"a": [1, {"b": 1}]}) == (
        "a[1].b: was True (bool), came back 1 (int)"
    )


# -- the worker side -------------------------------------------------------------------


class _Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 5


class _Quarantine:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, _msg: Any, stage: str, reason: str) -> None:
        self.sent.append((stage, reason))


def _worker(spec: Any, quarantine: _Quarantine) -> TransformWorker:
    return TransformWorker("m", "t", None, spec, None, quarantine, None)  # type: ignore[arg-type]


def _event(doc: dict[str, Any]) -> _Msg:
    ev = events.ChangeEvent("update", "shop.orders", doc["_id"], doc, 42 << 32, 0)
    return _Msg(events.encode(ev))


def test_worker_deletes_target_copy_of_filtered_document(tmp_path: Path) -> None:
    """A document the filter excludes becomes a version-guarded delete, not a quarantine."""
    spec = load_spec(_write(tmp_path, SPEC_TEXT))
    quarantine = _Quarantine()
    write = _worker(spec, quarantine)._prepare(_event({"_id": 3, "status": "archived"}))  # type: ignore[arg-type]
    assert write is not None
    assert (write.doc_id, write.version, write.document) == (3, 42 << 32, None)
    assert quarantine.sent == []


def test_worker_quarantines_target_schema_violation() -> None:
    """A transformed document that breaks orders.v2 is quarantined with the field path."""
    spec = get_spec("orders.v1_to_v2")
    quarantine = _Quarantine()
    doc = {"_id": ObjectId(), "cust_name": "Ada", "total": 1.5, "items": [{"sku": "A"}]}
    assert _worker(spec, quarantine)._prepare(_event(doc)) is None  # type: ignore[arg-type]
    assert quarantine.sent == [
        ("transform", "does not match schema orders.v2: items[0].qty: missing (required by Item)")
    ]


#: The same spec with no examples and no schema: nothing to check.
EMPTY_SPEC_TEXT = SPEC_TEXT[: SPEC_TEXT.index("examples:")]


def test_check_of_no_documents_exits_1_unless_allow_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 documents checked is not a pass: it says so and exits 1; --allow-empty makes it 0."""
    path = str(_write(tmp_path, EMPTY_SPEC_TEXT))
    assert main(["spec", "check", path]) == 1
    out = capsys.readouterr().out
    assert "RESULT OK" not in out
    assert "RESULT NOTHING CHECKED: 0 documents" in out
    assert "(no documents: give --mongo-uri, or add `examples` or a source schema)" in out
    assert "--allow-empty" in out
    assert main(["spec", "check", path, "--allow-empty"]) == 0
    out = capsys.readouterr().out
    assert "RESULT OK: 0 documents checked (--allow-empty)" in out


def test_check_with_zero_sample_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """--sample 0 of a spec with examples checks nothing: exit 1, not RESULT OK."""
    assert main(["spec", "check", "orders.v1_to_v2", "--sample", "0"]) == 1
    out = capsys.readouterr().out
    assert "(no documents: --sample 0)" in out
    assert "RESULT NOTHING CHECKED" in out


def test_check_labels_a_spec_without_schema_as_having_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`schema: null` is not shown as (orders.v1) -> (orders.v2): the label says no schema."""
    main(["spec", "check", str(_write(tmp_path, SPEC_TEXT))])
    out = capsys.readouterr().out
    assert "(orders.v1) -> shop.orders_v2 (orders.v2)" not in out
    assert (
        "  shop.orders (orders.v1, no schema) -> shop.orders_v2 (orders.v2, no target schema: "
        "documents are not validated), 2 steps"
    ) in out


def test_check_labels_schemas_it_validates_against(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped spec names the schema files of both sides."""
    main(["spec", "check", "orders.v1_to_v2", "--sample", "5"])
    out = capsys.readouterr().out
    assert "  shop.orders (schema orders.v1) -> shop.orders_v2 (schema orders.v2), 4 steps" in out


def test_check_without_a_terminal_logs_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """`spec check --sample` without a terminal: JSON progress lines on stderr, report on stdout."""
    args = ["orders.v1_to_v2", "--sample", "30", "--progress-interval", "0"]
    assert main(["spec", "check", *args]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.err.splitlines()]
    assert [r["done"] for r in records if r["event"] == "progress"] == list(range(1, 31))
    assert records[-1]["event"] == "progress.done"
    assert (records[-1]["done"], records[-1]["total"], records[-1]["estimated"]) == (30, 30, False)
    assert "progress" not in captured.out
    assert captured.out.rstrip().endswith("RESULT OK")
