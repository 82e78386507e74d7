"""Reconciler logic without servers: canonical hashing, field diffs, intervals, the verdict."""

from __future__ import annotations

from decimal import Decimal

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from stream_migrator.canonical import doc_hash
from stream_migrator.cli.reconcile import parse_sample
from stream_migrator.errors import ConfigError
from stream_migrator.id_order import after_id_filters, id_before
from stream_migrator.kafka import PartitionPosition
from stream_migrator.reconcile.canonical import diff_docs, generic_path, leaf_paths
from stream_migrator.reconcile.lag import LagReport, PartitionLag
from stream_migrator.reconcile.recheck import _newer
from stream_migrator.reconcile.report import ReconcileReport, decide, wilson_interval
from stream_migrator.reconcile.scan import _segment_queries


def test_hash_ignores_field_order_and_metadata() -> None:
    """Reordered keys (at any depth) and the _sm field do not change the hash."""
    a = {"_id": 1, "customer": {"name": "x", "tier": 2}, "total": Decimal128("1.5")}
    b = {"total": Decimal128("1.5"), "customer": {"tier": 2, "name": "x"}, "_id": 1}
    b["_sm"] = {"v": Int64(99)}
    assert doc_hash(a) == doc_hash(b)


def test_hash_distinguishes_bson_types_of_equal_numbers() -> None:
    """int 5, long 5, double 5.0 and Decimal128 5 hash differently (readers see the type)."""
    hashes = {doc_hash({"v": v}) for v in (5, Int64(5), 5.0, Decimal128("5"))}
    assert len(hashes) == 4


def test_diff_names_nested_value_path() -> None:
    """A wrong nested value is reported at its dotted path with both values."""
    diffs = diff_docs({"customer": {"name": "Ann"}}, {"customer": {"name": "Bob"}})
    assert [(d.path, d.reason) for d in diffs] == [("customer.name", "value")]
    assert "expected 'Ann', got 'Bob'" in diffs[0].describe()


def test_diff_reports_int_instead_of_decimal_as_type() -> None:
    """An int where a Decimal128 is expected is a type difference, not a value one."""
    diffs = diff_docs({"total": Decimal128(Decimal("5"))}, {"total": 5})
    assert [(d.path, d.reason) for d in diffs] == [("total", "type")]
    assert "type int instead of decimal" in diffs[0].describe()


def test_diff_reports_missing_extra_and_array_elements() -> None:
    """Missing and extra fields and array elements each get their own entry."""
    diffs = diff_docs(
        {"a": 1, "items": [{"q": 1}, {"q": 2}]},
        {"b": 2, "items": [{"q": 1}], "_sm": {"v": 1}},
    )
    assert [(d.path, d.reason) for d in diffs] == [
        ("a", "missing_field"),
        ("b", "extra_field"),
        ("items.1", "missing_field"),
    ]


def test_equal_documents_have_no_diff() -> None:
    """Same content in another key order, plus metadata: no differences."""
    assert diff_docs({"x": {"a": 1, "b": 2}}, {"x": {"b": 2, "a": 1}, "_sm": {"v": 3}}) == []


def test_leaf_paths_skip_nulls_and_fold_arrays() -> None:
    """Coverage paths include sub-documents, fold array items and skip nulls and _sm."""
    doc = {"_id": 1, "a": {"b": 1, "c": None}, "items": [{"q": 1}, {"q": 2}], "_sm": {"v": 1}}
    assert sorted(leaf_paths(doc)) == ["_id", "a", "a.b", "items", "items.[].q"]
    assert generic_path("items.3.q") == "items.[].q"


def test_wilson_interval_is_informative_at_zero() -> None:
    """0 of 400 still gives an upper bound above 0 (the normal approximation gives 0)."""
    low, high = wilson_interval(0, 400)
    assert low == 0.0
    assert 0.005 < high < 0.02
    low, high = wilson_interval(10, 100)
    assert low < 0.1 < high


@pytest.mark.parametrize(("text", "value"), [("1%", 0.01), ("0.05", 0.05), ("100%", 1.0)])
def test_parse_sample_accepts_percent_and_fraction(text: str, value: float) -> None:
    """--sample takes P% or a fraction."""
    assert parse_sample(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1", "0", "abc", "150%"])
def test_parse_sample_rejects_ambiguous_or_out_of_range(text: str) -> None:
    """A bare 1 (1% or 100%?), zero, junk and >100% are configuration errors."""
    with pytest.raises(ConfigError, match="--sample"):
        parse_sample(text)


def test_id_order_brackets_types_like_mongodb() -> None:
    """Numbers before strings before ObjectIds; numbers compare across BSON types."""
    assert id_before(5, "a")
    assert id_before("z", ObjectId())
    assert id_before(Int64(2), Decimal128("2.5"))
    assert not id_before(3.0, 2)


def _report(**counts: int) -> ReconcileReport:
    report = ReconcileReport("m", source_count=100)
    report.counts.update(counts)
    report.lag = LagReport(
        known=True,
        partitions=[PartitionLag(PartitionPosition(0, 0, 10, 10))],
        capture_measured=True,
    )
    return report


def test_verdict_not_ready_when_capture_lag_unknown() -> None:
    """An unread oplog (mongos, no access to local) fails closed: NOT READY, why, what to do."""
    report = _report()
    report.lag = LagReport(known=True, partitions=[PartitionLag(PartitionPosition(0, 0, 10, 10))])
    report.lag.capture_error = "reading local.oplog.rs failed (OperationFailure: not authorized)"
    verdict = decide(report, max_lag_events=0, max_lag_seconds=1)
    assert not verdict.ready
    [reason] = verdict.reasons
    assert reason.startswith("capture lag is unknown: reading local.oplog.rs failed")
    assert "not authorized" in reason
    assert "not mongos" in reason
    assert "read access on the local database" in reason


def test_capture_lag_is_zero_when_oplog_has_no_change_of_the_collection() -> None:
    """A readable oplog without an entry of the collection means nothing is left to capture."""
    assert LagReport(known=True, capture_measured=True).capture_lag_seconds == 0.0
    assert LagReport(known=True).capture_lag_seconds is None


def test_verdict_names_untransformable_documents() -> None:
    """The quarantine reason lists the first rejected _ids with the spec's reason."""
    report = _report()
    report.untransformable = 4
    report.samples["untransformable"] = [
        {"_id": n, "reason": f"address: cannot split {n}"} for n in range(4)
    ]
    verdict = decide(report, max_lag_events=0, max_lag_seconds=1)
    [reason] = verdict.reasons
    assert "4 source documents cannot be transformed" in reason
    assert "_id=0: address: cannot split 0; _id=1" in reason
    assert "_id=3" not in reason  # the first three only; the report lists more


def test_verdict_ready_when_clean_and_caught_up() -> None:
    """No divergence, no quarantine, no lag: READY with no reasons."""
    verdict = decide(_report(), max_lag_events=0, max_lag_seconds=1)
    assert verdict.ready
    assert verdict.reasons == []


def test_verdict_names_each_reason() -> None:
    """Divergence, untransformable documents and lag each add a reason."""
    report = _report(missing=2, type=1)
    report.untransformable = 3
    report.lag = LagReport(known=True, partitions=[PartitionLag(PartitionPosition(0, 0, 50, 10))])
    verdict = decide(report, max_lag_events=5, max_lag_seconds=100)
    assert not verdict.ready
    assert verdict.lag_events == 40
    assert verdict.divergence_ratio == pytest.approx(0.03)
    text = " | ".join(verdict.reasons)
    assert "3 divergent documents (missing 2, type 1)" in text
    assert "3 source documents cannot be transformed" in text
    assert "40 events not yet applied" in text


def test_newer_treats_rounded_snapshot_version_as_lower_bound() -> None:
    """A change in the same second as a whole-second snapshot version is not provably newer."""
    snapshot = 100 << 32  # Timestamp(100, 0): a rounded-down read time
    assert not _newer((100 << 32) | 7, snapshot)
    assert _newer((101 << 32) | 1, snapshot)
    assert _newer((100 << 32) | 8, (100 << 32) | 7)
    assert not _newer(None, snapshot)
    assert _newer(5, None)


def test_reconcile_settings_extend_a_base_settings() -> None:
    """gate() gets a plain Settings: its values carry over, reconcile knobs get defaults."""
    from stream_migrator.reconcile import load_reconcile_settings
    from stream_migrator.settings import load_settings

    base = load_settings(migration="m-gate", mongo_uri="mongodb://u:secret@h/")
    rs = load_reconcile_settings(base, reconcile_bucket_size=7)
    assert rs.migration == "m-gate"
    assert rs.mongo_uri.get_secret_value() == "mongodb://u:secret@h/"
    assert rs.reconcile_bucket_size == 7
    assert rs.reconcile_recheck_timeout_s == 60.0


def test_schema_paths_walk_records_arrays_and_unions() -> None:
    """Coverage fields come from the schema: nested records, array items, nullable unions."""
    import fastavro

    from stream_migrator.reconcile.canonical import schema_paths

    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [
                {
                    "name": "a",
                    "type": {
                        "type": "record",
                        "name": "A",
                        "fields": [{"name": "b", "type": "string"}],
                    },
                },
                {
                    "name": "items",
                    "type": {
                        "type": "array",
                        "items": {
                            "type": "record",
                            "name": "I",
                            "fields": [{"name": "q", "type": "long"}],
                        },
                    },
                },
                {"name": "c", "type": ["null", "A"]},
            ],
        }
    )
    assert isinstance(parsed, dict)
    named = parsed.get("__named_schemas", {})
    assert schema_paths(parsed, named) == ["a", "a.b", "items", "items.[].q", "c", "c.b"]


def test_segment_queries_resume_across_type_brackets_inside_bounds() -> None:
    """A resumed segment continues after last_id bracket by bracket, each query kept in bounds."""
    fresh = {"lo": None, "hi": None, "first": True, "done": False}
    assert _segment_queries(fresh) == [{}]
    resumed = _segment_queries({**fresh, "has_last": True, "last_id": 7})
    assert resumed == after_id_filters(7)
    assert {"_id": {"$type": ["string"]}} in resumed
    assert {"_id": {"$type": ["objectId"]}} in resumed
    first = {"lo": None, "hi": 100, "first": True, "done": False, "has_last": True, "last_id": 7}
    below = {"_id": {"$not": {"$gte": 100}}}
    assert _segment_queries(first) == [{"$and": [f, below]} for f in after_id_filters(7)]
    middle = {"lo": 100, "hi": 200, "first": False, "done": False}
    assert _segment_queries(middle) == [{"_id": {"$gte": 100, "$lt": 200}}]
    in_range = {"_id": {"$gte": 100, "$lt": 200}}
    assert _segment_queries({**middle, "has_last": True, "last_id": 150})[0] == {
        "$and": [{"_id": {"$gt": 150}}, in_range]
    }


def test_verdict_leaves_unknown_consumer_lag_unmeasured() -> None:
    """Unknown consumer lag is a NOT READY reason and no lag figure: a fence sees it missing."""
    report = _report()
    report.lag = LagReport(known=False, error="no coordinator", capture_measured=True)
    verdict = decide(report, max_lag_events=0, max_lag_seconds=1)
    assert not verdict.ready
    assert verdict.lag_events is None
    assert verdict.lag_seconds is None
    assert any(r.startswith("consumer lag is unknown: no coordinator") for r in verdict.reasons)
