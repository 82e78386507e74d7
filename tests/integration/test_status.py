"""`stream-migrator status` on a real pipeline: snapshot progress, verdict, quarantine, halt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.app import run_capture
from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.errors import FatalError
from stream_migrator.rollout import audit
from stream_migrator.rollout.controller import Controller
from stream_migrator.rollout.gate import compare_gate
from stream_migrator.rollout.plan import load_plan
from stream_migrator.settings import Settings, load_settings
from stream_migrator.status import progress_document
from stream_migrator.status.reader import StatusReader
from stream_migrator.status_view import render
from stream_migrator.transform.quarantine import read_quarantine
from tests.integration.helpers import (
    REPO,
    StageThread,
    cli,
    client_for,
    pipeline,
    settings_env,
    wait_until_match,
)
from tests.integration.rollout_plans import order, plan_file

pytestmark = pytest.mark.integration


def _wait_for(what: str, check: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def _seed(s: Settings, n: int, *, bad: int = 0) -> list[ObjectId]:
    client = client_for(s)
    db, coll = s.split_ns(s.source)
    docs = [order(i) for i in range(n)]
    bad_docs: list[dict[str, Any]] = [
        {"_id": ObjectId(), "cust_name": "b", "address": "nowhere", "total": 1} for _ in range(bad)
    ]
    client[db][coll].insert_many(docs + bad_docs)
    client.close()
    return [d["_id"] for d in bad_docs]


def _reconcile(s: Settings) -> None:
    from stream_migrator.reconcile import run_reconcile
    from stream_migrator.reconcile.settings import load_reconcile_settings

    run_reconcile(load_reconcile_settings(s), restart=True)


def test_status_during_snapshot_shows_rising_percentage_and_finite_eta(
    settings_kwargs: dict[str, Any],
) -> None:
    """A throttled snapshot: two readings in the snapshot phase, the second further along."""
    s = load_settings(**{**settings_kwargs, "max_docs_per_second": 250})
    _seed(s, 1500)
    with pipeline(s), StatusReader(s, first_interval_s=0.5) as reader:

        def in_snapshot() -> dict[str, Any] | None:
            doc = reader.read()
            snap = (doc["capture"].get("snapshot") or {}) if doc["capture"]["available"] else {}
            share = snap.get("percent")
            if doc["capture"].get("phase") != "snapshot" or share is None:
                return None
            return doc if 0 < share < 100 else None

        first = _wait_for("a reading in the snapshot phase", in_snapshot)
        snap = first["capture"]["snapshot"]
        assert snap["estimated_total"] == 1500
        assert snap["rate_per_s"] > 0
        assert snap["eta_s"] is not None
        assert 0 < snap["eta_s"] < 3600
        assert "snapshot not done" in " ".join(first["cutover_blockers"])
        assert first["can_cutover"] is False

        def further() -> dict[str, Any] | None:
            doc = reader.read()
            later = doc["capture"]["snapshot"]
            if doc["capture"]["phase"] != "snapshot" or later["percent"] is None:
                return None
            return doc if later["percent"] > snap["percent"] else None

        second = _wait_for("a later snapshot reading with a higher percentage", further)
        assert second["capture"]["snapshot"]["eta_s"] is not None
        human = render(second)
        assert f"{second['capture']['snapshot']['percent']:g}%" in human
        assert "ETA " in human
        _wait_for("the snapshot to finish", lambda: reader.read()["capture"]["snapshot"]["done"])


def test_status_after_converged_pipeline_and_reconcile_can_cut_over(
    settings_kwargs: dict[str, Any],
) -> None:
    """Converged + a READY reconcile: verdict shown, can_cutover true; --json equals the table."""
    s = load_settings(**settings_kwargs)
    _seed(s, 200)
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        _wait_for(
            "transform lag 0",
            lambda: progress_document(s, first_interval_s=0)["transform"]["lag_events"] == 0,
        )
        _reconcile(s)
        doc = progress_document(s)
        assert doc["reconcile"]["verdict"] == "READY", doc["reconcile"]
        assert doc["reconcile"]["divergence_ratio"] == 0.0
        assert doc["reconcile"]["age_s"] is not None
        assert doc["reconcile"]["age_s"] < 3600
        assert doc["capture"]["phase"] == "streaming"
        assert doc["capture"]["snapshot"]["done"] is True
        assert doc["transform"]["members"] == 1
        assert len(doc["transform"]["partitions"]) == 3
        assert sum(p["produced"] for p in doc["transform"]["partitions"]) >= 200
        assert doc["quarantine"]["count"] == 0
        assert doc["rollout"] == {"available": True, "error": None, "found": False}
        assert doc["cutover_blockers"] == [], doc["cutover_blockers"]
        assert doc["can_cutover"] is True

    env = settings_env(s)
    as_json = cli("status", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    table = cli("status", env=env)
    assert table.returncode == 0, table.stderr
    assert data["reconcile"]["verdict"] == "READY"
    assert f"reconcile   READY  divergence {data['reconcile']['divergence_ratio']:g}" in (
        table.stdout
    )
    t = data["transform"]
    assert f"lag {t['lag_events']} events, {t['lag_seconds']:.1f} s  members {t['members']}" in (
        table.stdout
    )
    for p in t["partitions"]:
        assert f"partition {p['partition']:<3} produced {p['produced']:<8} " in table.stdout
    assert f"can_cutover {str(data['can_cutover']).lower()}" in table.stdout
    assert f"0 events in {s.quarantine_topic}" in table.stdout

    down = cli("status", "--json", env={**env, "SM_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert down.returncode == 0, down.stderr
    unreachable = json.loads(down.stdout)
    assert unreachable["capture"]["available"] is True  # MongoDB sections still read
    assert unreachable["capture"]["snapshot"]["done"] is True
    assert unreachable["reconcile"]["verdict"] == "READY"
    assert unreachable["transform"]["available"] is False
    assert "Kafka did not answer" in unreachable["transform"]["error"]
    assert unreachable["quarantine"]["available"] is False
    assert unreachable["can_cutover"] is False
    assert any(r.startswith("transform lag unknown") for r in unreachable["cutover_blockers"])


def test_quarantined_event_blocks_cutover_with_its_reason(settings_kwargs: dict[str, Any]) -> None:
    """One malformed order: counted by stage, its reason shown, can_cutover false naming it."""
    s = load_settings(**settings_kwargs)
    (bad_id,) = _seed(s, 50, bad=1)
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        _wait_for(
            "the quarantined event", lambda: read_quarantine(s.kafka_bootstrap, s.quarantine_topic)
        )
    env = settings_env(s)
    as_json = cli("status", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    q = doc["quarantine"]
    assert q["count"] == 1
    assert q["by_stage"] == {"transform": 1}
    assert q["newest"]["doc_id"] == str(bad_id)
    assert "address" in q["newest"]["reason"]
    assert doc["can_cutover"] is False
    blocker = next(r for r in doc["cutover_blockers"] if "in quarantine" in r)
    assert "transform 1" in blocker
    assert "address" in blocker

    table = cli("status", env=env)
    assert table.returncode == 0, table.stderr
    assert "quarantine  1 event (transform 1)" in table.stdout
    assert str(bad_id) in table.stdout
    assert "can_cutover false" in table.stdout
    assert f"  - {blocker}" in table.stdout


def test_status_after_a_fence_halt_names_the_breach(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """A lag fence halts the rollout: status shows the stage, the breach and can_cutover false."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    src = client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]]
    src.insert_many([order(i) for i in range(40)])
    plan = plan_file(tmp_path, s, max_lag_events=20, max_divergence=1.0)
    c = Controller(load_plan(plan), client, s, compare_gate, "tester")
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        c.ensure_states()
        for _ in range(4):
            c.advance(s.migration)  # shadow, verify, internal, 10%
        stages["transform"].stop()
        src.insert_many([order(100 + i) for i in range(60)])

        def halted() -> bool:
            c.tick()
            return c.status(s.migration).halted

        _wait_for("the lag fence to halt the rollout", halted, timeout=60, every=0.5)
    assert audit.entries(client, s.metadata_db, s.migration)[-1]["action"] == "fence_breach"
    doc = progress_document(s, first_interval_s=0)
    r = doc["rollout"]
    assert r["found"]
    assert r["halted"] is True
    assert r["stage"] == "canary"
    assert "lag_events" in r["halt_reason"]
    assert [b["fence"] for b in r["fences"]["breaches"]] == ["lag_events"]
    assert doc["can_cutover"] is False
    assert any(
        x.startswith("rollout halted: fence breached: lag_events") for x in doc["cutover_blockers"]
    )
    human = render(doc)
    assert "HALTED: fence breached: lag_events" in human
    assert "breach lag_events" in human
    client.close()


def test_status_watch_refreshes_until_sigint_and_bad_config_exits_2(
    settings_kwargs: dict[str, Any],
) -> None:
    """--watch prints a view per interval until SIGINT (exit 0); a bad setting exits 2."""
    s = load_settings(**settings_kwargs)
    env = {**os.environ, **settings_env(s)}
    child = subprocess.Popen(
        [sys.executable, "-m", "stream_migrator", "status", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert child.stdout is not None
        views = 0
        deadline = time.monotonic() + 60
        while views < 2 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, (
                f"status --watch ended early: {child.stderr.read() if child.stderr else ''}"
            )
            views += line.startswith("can_cutover ")
        assert views == 2
        child.send_signal(signal.SIGINT)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)

    bad = cli("status", "--partitions", "0", env=settings_env(s))
    assert bad.returncode == 2
    assert "configuration error" in bad.stderr
    zero = cli("status", "--watch", "0", env=settings_env(s))
    assert zero.returncode == 2
    assert "--watch" in zero.stderr


def test_status_of_a_capture_stopped_by_a_drop_names_the_reason(
    settings_kwargs: dict[str, Any],
) -> None:
    """Source dropped: capture records why it stopped; status shows it and blocks the cutover."""
    s = load_settings(**settings_kwargs)
    _seed(s, 20)
    capture = StageThread(run_capture, s)
    capture.start()
    store = MongoCheckpointStore(client_for(s), s.metadata_db, s.migration)
    _wait_for(
        "capture to reach the stream",
        lambda: ((store.load() or {}).get("snapshot") or {}).get("done"),
    )
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].drop()
    _wait_for("capture to record its stop", lambda: (store.load() or {}).get("stopped"))
    capture.join(30)
    assert isinstance(capture.error, FatalError)
    doc = progress_document(s, first_interval_s=0)
    assert doc["capture"]["phase"] == "stopped"
    assert doc["capture"]["stopped"]["reason"] == "drop"
    assert doc["can_cutover"] is False
    assert any(r.startswith("capture stopped at a 'drop' event") for r in doc["cutover_blockers"])
    assert "capture     STOPPED at a 'drop' event" in render(doc)
    client.close()


def test_status_shows_the_verdict_the_reconcile_reached_with_its_lag_reason(
    settings_kwargs: dict[str, Any],
) -> None:
    """Equal data but no pipeline (lag unknown): NOT READY for that reason, as reconcile said.

    A verdict rebuilt from the run's suspects alone would say READY: nothing diverges.
    """
    from stream_migrator.spec import get_spec

    s = load_settings(**settings_kwargs)
    client = client_for(s)
    spec = get_spec(s.spec)
    docs = [order(i) for i in range(50)]
    client[s.split_ns(s.source)[0]][s.split_ns(s.source)[1]].insert_many(docs)
    migrated = [spec.migrate(d) for d in docs]
    client[s.split_ns(s.target)[0]][s.split_ns(s.target)[1]].insert_many(
        [d for d in migrated if d is not None]
    )
    client.close()
    _reconcile(s)
    shown = progress_document(s, first_interval_s=0)["reconcile"]
    assert shown["verdict"] == "NOT READY", shown
    assert shown["verdict_source"] == "stored"
    assert any("lag" in r for r in shown["reasons"]), shown["reasons"]
    assert shown["divergence_ratio"] == 0.0


def test_status_takes_the_migration_as_its_argument(settings_kwargs: dict[str, Any]) -> None:
    """`status NAME --json` shows NAME whatever SM_MIGRATION says; naming two differently is 2."""
    s = load_settings(**settings_kwargs)
    env = {**settings_env(s), "SM_MIGRATION": "some-other-migration"}
    shown = cli("status", s.migration, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["migration"] == s.migration
    both = cli("status", s.migration, "--migration", "x", env=env)
    assert both.returncode == 2
    assert "name the migration once" in both.stderr
