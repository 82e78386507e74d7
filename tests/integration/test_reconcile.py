"""The reconciler on real servers: divergence kinds, live writes, repair, resume, metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId, Timestamp
from bson.int64 import Int64

from stream_migrator.app import run_capture, run_transform, run_watch
from stream_migrator.demo.data import v1_order
from stream_migrator.events import version_of
from stream_migrator.id_sample import sample_ids
from stream_migrator.reconcile import ReconcileSettings, gate, load_reconcile_settings
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.reconcile.service import run_reconcile
from stream_migrator.runtime import StopFlag
from stream_migrator.spec import get_spec
from tests.integration.helpers import (
    REPO,
    StageThread,
    client_for,
    pipeline,
    settings_env,
    wait_until_match,
)

pytestmark = pytest.mark.integration


_RNG = random.Random(11)


def _order(i: int) -> dict[str, Any]:
    """A valid v1 order (the demo's generator) with a recognisable customer name."""
    return {**v1_order(_RNG, i), "cust_name": f"c{i}"}


def _settings(settings_kwargs: dict[str, Any], **extra: Any) -> ReconcileSettings:
    return load_reconcile_settings(
        None,
        **settings_kwargs,
        reconcile_recheck_timeout_s=extra.pop("reconcile_recheck_timeout_s", 15),
        reconcile_settle_s=0.5,
        **extra,
    )


def _colls(s: ReconcileSettings) -> tuple[Any, Any, Any]:
    client = client_for(s)
    sdb, scoll = s.split_ns(s.source)
    tdb, tcoll = s.split_ns(s.target)
    return client, client[sdb][scoll], client[tdb][tcoll]


def _seed_both_sides(s: ReconcileSettings, n: int) -> list[dict[str, Any]]:
    """Source orders and their correct target documents, written directly (no pipeline)."""
    _client, src, tgt = _colls(s)
    docs = [_order(i) for i in range(n)]
    src.insert_many(docs)
    spec = get_spec(s.spec)
    # A version newer than the source inserts, as if the pipeline had applied them.
    applied = Int64(version_of(Timestamp(int(time.time()) + 5, 0)))
    tgt.insert_many([{**spec.transform(d), "_sm": {"v": applied}} for d in docs])
    return docs


def test_reconcile_finds_each_injected_divergence_kind(settings_kwargs: dict[str, Any]) -> None:
    """missing, orphan, nested value, int-vs-Decimal128 type and stale are each found and named."""
    s = _settings(settings_kwargs, reconcile_bucket_size=50)
    client, src, tgt = _colls(s)
    docs = [_order(i) for i in range(300)]
    src.insert_many(docs)
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        _wait_caught_up(s)
    missing, value, typed, stale = (docs[i]["_id"] for i in (10, 120, 200, 290))
    orphan = ObjectId()
    tgt.delete_one({"_id": missing})
    tgt.insert_one({"_id": orphan, "customer": {"name": "ghost"}, "_sm": {"v": Int64(1)}})
    tgt.update_one({"_id": value}, {"$set": {"customer.name": "WRONG"}})
    tgt.update_one({"_id": typed}, {"$set": {"total": 5}})
    # The pipeline is stopped, so this change never reaches the target: a stale version.
    # (A second later than the snapshot: the stand-in's snapshot version is whole seconds.)
    time.sleep(1.0)
    src.update_one({"_id": stale}, {"$set": {"status": "shipped"}})

    report = run_reconcile(s)

    assert report.counts == {"missing": 1, "orphan": 1, "stale": 1, "type": 1, "value": 1}
    assert report.unresolved_in_flight == 0
    assert report.source_count == 300
    assert report.target_count == 300
    by_kind = {k: v[0] for k, v in report.samples.items()}
    assert by_kind["missing"]["_id"] == missing
    assert by_kind["orphan"]["_id"] == orphan
    assert [d["path"] for d in by_kind["value"]["diffs"]] == ["customer.name"]
    assert by_kind["value"]["diffs"][0]["actual"] == "'WRONG'"
    assert [(d["path"], d["reason"]) for d in by_kind["type"]["diffs"]] == [("total", "type")]
    assert by_kind["type"]["diffs"][0]["actual_type"] == "int"
    assert by_kind["type"]["diffs"][0]["expected_type"] == "decimal"
    assert [d["path"] for d in by_kind["stale"]["diffs"]] == ["status"]
    assert by_kind["stale"]["source_version"] > by_kind["stale"]["target_version"]
    assert report.buckets == 7  # 301 ids (300 + the orphan) in buckets of 50
    assert report.buckets_drilled == 5  # one per injected fault; clean buckets untouched
    assert report.coverage["customer.name"] == pytest.approx(1.0)
    # The orphan has only customer.name: every other schema field lacks one document.
    assert report.coverage["status"] == pytest.approx(299 / 300)
    assert report.coverage["items.[].sku"] == pytest.approx(299 / 300)
    assert report.lag.known
    assert not report.verdict.ready
    assert "5 divergent documents" in report.verdict.reasons[0]
    client.close()


def _wait_caught_up(s: ReconcileSettings, timeout: float = 30) -> None:
    """Until the transform group has committed every event (replays of the snapshot too)."""
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    deadline = time.monotonic() + timeout
    try:
        while probe.group_lag() != 0:
            assert time.monotonic() < deadline, "the transform group did not catch up"
            time.sleep(0.2)
    finally:
        probe.close()


class _LiveWriter(threading.Thread):
    """Inserts, updates and deletes source orders at a steady rate until stopped."""

    def __init__(self, src: Any, ids: list[Any], rate: float = 40.0) -> None:
        super().__init__(daemon=True)
        self._src, self._ids, self._rate = src, list(ids), rate
        self.stop_flag = threading.Event()
        self.writes = 0

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop_flag.wait(1 / self._rate):
            roll = rng.random()
            if roll < 0.4:
                doc = _order(rng.randrange(10_000))
                self._src.insert_one(doc)
                self._ids.append(doc["_id"])
            elif roll < 0.9 and self._ids:
                self._src.update_one(
                    {"_id": rng.choice(self._ids)}, {"$set": {"total": rng.randrange(1000) + 0.5}}
                )
            elif self._ids:
                self._src.delete_one({"_id": self._ids.pop(rng.randrange(len(self._ids)))})
            self.writes += 1


def test_reconcile_reports_no_divergence_under_live_writes(
    settings_kwargs: dict[str, Any],
) -> None:
    """A correct pipeline under steady live writes: 0 divergent documents, gate READY."""
    s = _settings(settings_kwargs, reconcile_bucket_size=100, reconcile_recheck_timeout_s=30)
    client, src, _tgt = _colls(s)
    docs = [_order(i) for i in range(800)]
    src.insert_many(docs)
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        writer = _LiveWriter(src, [d["_id"] for d in docs])
        writer.start()
        try:
            time.sleep(1.0)
            report = run_reconcile(s)
            verdict = gate(s)
        finally:
            writer.stop_flag.set()
            writer.join(10)
    assert writer.writes > 50
    assert report.divergent == 0, report.samples
    assert report.verdict.ready, report.verdict.reasons
    assert verdict.ready, verdict.reasons
    assert verdict.divergence_ratio == 0.0
    assert isinstance(verdict.lag_events, int)
    assert verdict.lag_seconds >= 0.0
    client.close()


def test_reconcile_rechecks_change_not_yet_applied(settings_kwargs: dict[str, Any]) -> None:
    """A change waiting in Kafka is in flight: rechecked once applied, never reported divergent."""
    s = _settings(settings_kwargs, reconcile_bucket_size=50, reconcile_recheck_timeout_s=40)
    client, src, _tgt = _colls(s)
    docs = [_order(i) for i in range(100)]
    src.insert_many(docs)
    capture = StageThread(run_capture, s)
    transform = StageThread(run_transform, s)
    capture.start()
    transform.start()
    try:
        wait_until_match(s, stages={"capture": capture, "transform": transform})
        _wait_caught_up(s)
        transform.stop()
        src.update_one({"_id": docs[42]["_id"]}, {"$set": {"cust_name": "changed"}})
        late = StageThread(run_transform, s)
        timer = threading.Timer(4.0, late.start)  # the worker returns while the compare waits
        timer.start()
        report = run_reconcile(s)
        timer.join()
        late.stop()
    finally:
        capture.stop()
    assert report.divergent == 0, report.samples
    assert report.resolved_in_flight == 1
    assert report.duration_s >= 3.0  # it waited for the worker instead of reporting
    client.close()


def test_reconcile_repair_converges_to_zero(settings_kwargs: dict[str, Any]) -> None:
    """--repair re-emits divergent ids through Kafka; workers fix them; orphans deleted on ask."""
    s = _settings(settings_kwargs, reconcile_bucket_size=50)
    client, src, tgt = _colls(s)
    docs = [_order(i) for i in range(200)]
    src.insert_many(docs)
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        tgt.delete_one({"_id": docs[3]["_id"]})
        tgt.update_one({"_id": docs[50]["_id"]}, {"$set": {"address.city": "Nowhere"}})
        tgt.update_one({"_id": docs[150]["_id"]}, {"$set": {"total": 1}})
        orphan = ObjectId()
        tgt.insert_one({"_id": orphan, "customer": {"name": "ghost"}, "_sm": {"v": Int64(1)}})

        steps: list[tuple[int, int]] = []
        kept = run_reconcile(s, repair=True, repair_progress=lambda d, t: steps.append((d, t)))
        assert steps == [(3, 3)]  # one acknowledged chunk (bucket size 50) of the 3 to repair
        assert kept.repair is not None
        assert kept.repair["reemitted"] == 3
        assert kept.repair["orphans_deleted"] == 0
        assert kept.counts["orphan"] == 1  # reported, not removed without --delete-orphans
        assert kept.divergent == 1

        fixed = run_reconcile(s, repair=True, delete_orphans=True, restart=True)
        assert fixed.repair is not None
        assert fixed.repair["orphans_deleted"] == 1
        assert fixed.repair["still_divergent"] == 0
        assert fixed.divergent == 0

        after = run_reconcile(s, restart=True)
    assert after.divergent == 0
    assert tgt.find_one({"_id": orphan}) is None
    client.close()


def test_reconcile_holds_at_most_one_bucket(settings_kwargs: dict[str, Any]) -> None:
    """On a collection 20x the bucket, no bucket ever holds more than bucket-size entries."""
    s = _settings(settings_kwargs, reconcile_bucket_size=50)
    _seed_both_sides(s, 1000)
    report = run_reconcile(s)
    assert report.max_bucket_entries == 50
    assert report.buckets == 20
    assert report.buckets_drilled == 0
    assert report.divergent == 0


def test_reconcile_parallel_segments_cover_every_id(settings_kwargs: dict[str, Any]) -> None:
    """Three _id ranges scanned in parallel find faults in each range and count every id once."""
    s = _settings(settings_kwargs, reconcile_bucket_size=40, reconcile_workers=3)
    client, _src, tgt = _colls(s)
    docs = _seed_both_sides(s, 600)
    for i in (5, 300, 595):
        tgt.update_one({"_id": docs[i]["_id"]}, {"$set": {"address.zip": "00000"}})
    report = run_reconcile(s)
    state = client[s.metadata_db]["reconcile_runs"].find_one({"_id": f"{s.migration}/reconcile"})
    assert state is not None
    assert len(state["segments"]) == 3
    assert all(seg["done"] for seg in state["segments"])
    assert report.source_count == 600
    assert report.target_count == 600
    assert report.counts["value"] == 3
    assert report.top_fields == [("address.zip", 3)]
    client.close()


def test_reconcile_sample_estimates_with_interval(settings_kwargs: dict[str, Any]) -> None:
    """--sample 30% of a target with 10% wrong values estimates a ratio whose CI holds 10%."""
    s = _settings(settings_kwargs, reconcile_bucket_size=100)
    client, _src, tgt = _colls(s)
    docs = _seed_both_sides(s, 1000)
    wrong = [d["_id"] for d in docs[::10]]
    tgt.update_many({"_id": {"$in": wrong}}, {"$set": {"customer.name": "x"}})
    report = run_reconcile(s, sample=0.3)
    assert report.mode == "sample"
    assert report.compared == 600  # 300 of each side
    assert report.ci95 is not None
    assert report.counts["value"] > 0
    assert report.ci95[0] <= 0.05 <= report.ci95[1] or report.ci95[0] <= 0.1 <= report.ci95[1]
    assert not report.verdict.ready
    # The fallback when the server's $sample fails: one _id pass, a reservoir sample.
    fallback = sample_ids(tgt, 50, attempts=0)
    assert len({str(i) for i in fallback}) == 50
    assert {str(i) for i in fallback} <= {str(d["_id"]) for d in docs}
    client.close()


def test_reconcile_killed_halfway_resumes(settings_kwargs: dict[str, Any]) -> None:
    """SIGKILL mid-compare, then a rerun resumes after the last bucket and finds both faults."""
    s = _settings(settings_kwargs, reconcile_bucket_size=50)
    client, _src, tgt = _colls(s)
    docs = _seed_both_sides(s, 2000)
    tgt.update_one({"_id": docs[100]["_id"]}, {"$set": {"customer.name": "early"}})
    tgt.delete_one({"_id": docs[1900]["_id"]})
    env = {
        **os.environ,
        **settings_env(s),
        "SM_RECONCILE_MAX_DOCS_PER_SECOND": "800",
        "SM_RECONCILE_BUCKET_SIZE": "50",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_migrator", "reconcile", s.migration, "--json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    runs = client[s.metadata_db]["reconcile_runs"]
    deadline = time.monotonic() + 30
    done_buckets = 0
    while time.monotonic() < deadline:
        state = runs.find_one({"_id": f"{s.migration}/reconcile"}) or {}
        done_buckets = state.get("buckets", 0)
        if done_buckets >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert 10 <= done_buckets < 40, f"killed after {done_buckets} buckets"

    rerun = subprocess.run(
        [sys.executable, "-m", "stream_migrator", "reconcile", s.migration, "--json"],
        cwd=REPO,
        env={**env, "SM_RECONCILE_MAX_DOCS_PER_SECOND": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 1, rerun.stderr  # NOT READY: two divergences
    report = json.loads(rerun.stdout)
    assert report["resumed"] is True
    assert report["source_count"] == 2000
    assert report["buckets"]["total"] == 40
    assert report["counts"]["value"] == 1
    assert report["counts"]["missing"] == 1
    assert report["verdict"]["ready"] is False
    text = subprocess.run(
        [sys.executable, "-m", "stream_migrator", "reconcile", s.migration],
        cwd=REPO,
        env={**env, "SM_RECONCILE_MAX_DOCS_PER_SECOND": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "VERDICT               NOT READY" in text.stdout
    assert "customer.name: expected 'c100', got 'early'" in text.stdout
    client.close()


@pytest.fixture
def watch(settings_kwargs: dict[str, Any]) -> Iterator[tuple[ReconcileSettings, int]]:
    from stream_migrator.infra import free_port

    port = free_port()
    s = _settings(settings_kwargs, metrics_port=port, reconcile_interval_s=60)
    _seed_both_sides(s, 100)
    stop = StopFlag()
    thread = threading.Thread(target=run_watch, args=(s, stop), daemon=True)
    thread.start()
    yield s, port
    stop.set("test")
    thread.join(30)
    assert not thread.is_alive()


def test_reconcile_watch_exports_metrics_and_health(
    watch: tuple[ReconcileSettings, int],
) -> None:
    """--watch serves /healthz and the divergence, lag and coverage gauges on /metrics."""
    s, port = watch
    deadline = time.monotonic() + 30
    metrics = ""
    mine = f'sm_divergence_ratio{{migration="{s.migration}"}}'
    while mine not in metrics and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                metrics = r.read().decode()
        except OSError:
            pass
        time.sleep(0.3)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        health = json.loads(r.read())
    assert health["component"] == "reconcile"
    assert f'sm_divergence_ratio{{migration="{s.migration}"}} 0.0' in metrics
    assert (
        f'sm_field_coverage_ratio{{field="customer.name",migration="{s.migration}"}} 1.0' in metrics
    )
    assert f'sm_divergent_documents{{kind="missing",migration="{s.migration}"}} 0.0' in metrics
    assert "sm_reconcile_ready{" in metrics
    # /progress: the status document of this migration (status --json's), measured here.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=30) as r:
        progress = json.loads(r.read())
    assert progress["migration"] == s.migration
    assert progress["reconcile"]["available"] is True
    assert progress["reconcile"]["divergence_ratio"] == 0.0
