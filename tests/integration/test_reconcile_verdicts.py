"""No false READY: resume across BSON type brackets, untransformable suspects, one compare.

Each test creates the (empty) change topic, so the transform group's lag is known
and 0: the verdict then reads READY exactly when the compare itself finds nothing,
and a missed divergence shows as a false READY.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from bson import ObjectId, Timestamp
from bson.int64 import Int64

from stream_migrator.events import version_of
from stream_migrator.kafka import ensure_topic
from stream_migrator.reconcile import ReconcileSettings, full_compare, load_reconcile_settings
from stream_migrator.reconcile.engine import Reconciler
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.reconcile.report import render_text
from stream_migrator.reconcile.service import run_reconcile
from stream_migrator.rollout.reverse import inverted
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import MigrationSpec, get_spec
from stream_migrator.spec.reshape_steps import Rename
from tests.integration.helpers import client_for

pytestmark = pytest.mark.integration


def settings_with_topic(settings_kwargs: dict[str, Any], **extra: Any) -> ReconcileSettings:
    s = load_reconcile_settings(
        None,
        **settings_kwargs,
        reconcile_recheck_timeout_s=15,
        reconcile_settle_s=0.2,
        # Capture lag here is the time since seeding (no capture runs): not what is tested.
        reconcile_max_lag_seconds=3600,
        **extra,
    )
    ensure_topic(s.kafka_bootstrap, s.changes_topic, s.partitions)
    return s


def colls(s: ReconcileSettings) -> tuple[Any, Any, Any]:
    client = client_for(s)
    sdb, scoll = s.split_ns(s.source)
    tdb, tcoll = s.split_ns(s.target)
    return client, client[sdb][scoll], client[tdb][tcoll]


def order_with_id(doc_id: Any, i: int) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "cust_name": f"c{i}",
        "address": f"{i} Main St, Town, 1000{i % 10}",
        "total": i + 0.25,
        "status": "paid",
    }


def seed_both_sides(
    s: ReconcileSettings, ids: list[Any], spec: MigrationSpec | None = None
) -> None:
    """Source documents with these ids and their correct target copies (as if applied)."""
    _client, src, tgt = colls(s)
    spec = spec or get_spec(s.spec)
    docs = [order_with_id(doc_id, i) for i, doc_id in enumerate(ids)]
    src.insert_many(docs)
    applied = Int64(version_of(Timestamp(int(time.time()) + 5, 0)))
    tgt.insert_many([{**spec.migrate(d), "_sm": {"v": applied}} for d in docs])


def mixed_ids(n: int = 60) -> list[Any]:
    """``n`` int, ``n`` string and ``n`` ObjectId ids (three BSON type brackets)."""
    return list(range(n)) + [f"s{i:03d}" for i in range(n)] + [ObjectId() for _ in range(n)]


def test_resume_after_stop_inside_int_ids_reaches_strings_and_objectids(
    settings_kwargs: dict[str, Any],
) -> None:
    """A compare stopped inside the int ids resumes through strings and ObjectIds: NOT READY."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=20)
    client, _src, tgt = colls(s)
    seed_both_sides(s, mixed_ids())
    tgt.update_one({"_id": "s030"}, {"$set": {"customer.name": "WRONG"}})
    stop = StopFlag()
    first = run_reconcile(s, stop=stop, progress=lambda _d, _t: stop.set("test: stop"))
    assert first.interrupted
    state = client[s.metadata_db]["reconcile_runs"].find_one({"_id": f"{s.migration}/reconcile"})
    assert state is not None
    assert state["segments"][0]["last_id"] == 19  # stopped inside the ints

    resumed = run_reconcile(s)

    assert resumed.resumed
    assert resumed.source_count == 180
    assert resumed.target_count == 180
    assert resumed.counts["value"] == 1, resumed.counts
    assert resumed.samples["value"][0]["_id"] == "s030"
    assert not resumed.verdict.ready
    assert "1 divergent documents (value 1)" in resumed.verdict.reasons[0]
    client.close()


def test_recheck_of_suspect_turned_untransformable_stays_not_ready(
    settings_kwargs: dict[str, Any],
) -> None:
    """A suspect whose source turns untransformable mid-compare is named, never resolved."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=20)
    client, src, tgt = colls(s)
    ids = [ObjectId() for _ in range(60)]
    seed_both_sides(s, ids)
    bad = ids[5]
    tgt.update_one({"_id": bad}, {"$set": {"customer.name": "stale copy"}})

    def turn_bad(_done: int, _total: int) -> None:
        # After the first bucket (which holds ``bad``) and before the recheck.
        src.update_one({"_id": bad}, {"$set": {"address": "no commas here"}})

    report = run_reconcile(s, progress=turn_bad)

    assert report.resolved_in_flight == 0
    assert report.untransformable == 1
    assert [x["_id"] for x in report.samples["untransformable"]] == [bad]
    assert "address" in report.samples["untransformable"][0]["reason"]
    assert not report.verdict.ready
    assert any(str(bad) in r and "cannot be transformed" in r for r in report.verdict.reasons)
    client.close()


def test_untransformable_source_named_in_report(settings_kwargs: dict[str, Any]) -> None:
    """A source document the spec rejects at scan time is counted, named with its reason."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=20)
    client, src, _tgt = colls(s)
    ids = [ObjectId() for _ in range(30)]
    seed_both_sides(s, ids)
    src.update_one({"_id": ids[25]}, {"$set": {"address": "no commas here"}})
    report = run_reconcile(s)
    assert report.untransformable == 1
    assert [x["_id"] for x in report.samples["untransformable"]] == [ids[25]]
    assert not report.verdict.ready
    assert any(str(ids[25]) in r for r in report.verdict.reasons)
    text = render_text(report)
    assert f"  _id={ids[25]!r}: address: 'no commas here' does not match" in text
    client.close()


def _nan_spec() -> MigrationSpec:
    """A spec without a target schema, so doubles (NaN included) pass through unchanged."""
    return MigrationSpec(
        name="nan.rename", source_version="1", target_version="2", steps=(Rename("a", "b"),)
    )


def test_full_compare_agrees_with_reconcile_on_nan_and_mixed_ids(
    settings_kwargs: dict[str, Any],
) -> None:
    """Converged data with NaN values and int/string/ObjectId ids: 0 mismatches both ways."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=25)
    client, src, tgt = colls(s)
    spec = _nan_spec()
    docs = [
        {"_id": doc_id, "a": i, "score": math.nan if i % 7 == 0 else i / 3, "n": {"x": math.nan}}
        for i, doc_id in enumerate(mixed_ids())
    ]
    src.insert_many(docs)
    tgt.insert_many([{**spec.migrate(d), "_sm": {"v": Int64(1)}} for d in docs])

    forward = full_compare(src, tgt, spec)
    backward = full_compare(tgt, src, inverted(spec))  # the rollback direction
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    try:
        report = Reconciler(s, client, probe, spec=spec).run()
    finally:
        probe.close()

    assert (forward.source_count, forward.target_count) == (180, 180)
    assert forward.mismatches == 0, forward.examples
    assert backward.mismatches == 0, backward.examples
    assert report.divergent == 0, report.samples
    # ... and the same compare still sees a real difference among the strings.
    tgt.update_one({"_id": "s010"}, {"$set": {"score": 1.5}})
    assert full_compare(src, tgt, spec).different == 1
    client.close()


def test_sample_compare_keeps_bool_and_number_ids_apart(settings_kwargs: dict[str, Any]) -> None:
    """_id true and _id 1 are two documents: a divergent copy of one is found (full and sample)."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=20)
    client, src, tgt = colls(s)
    spec = _nan_spec()  # no target schema: a bool _id passes
    seed_both_sides(s, [1, True, 0, False, "x"], spec)
    assert src.count_documents({}) == 5  # MongoDB (and the stand-in) keep them apart
    tgt.update_one({"_id": True}, {"$set": {"status": "WRONG"}})

    assert full_compare(src, tgt, spec).different == 1
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    try:
        full = Reconciler(s, client, probe, spec=spec).run(restart=True)
        sampled = Reconciler(s, client, probe, spec=spec).run(sample=1.0, restart=True)
    finally:
        probe.close()
    for report in (full, sampled):
        assert report.divergent == 1, (report.mode, report.counts)
        assert [x["_id"] for x in report.samples["value"]] == [True], report.mode
    client.close()
