"""A real Prometheus scrapes a running pipeline: series exist, values are sane, alerts fire."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_migrator.demo.data import seed
from stream_migrator.observability import HealthServer, HealthState
from stream_migrator.observability.local_prometheus import RULES, LocalPrometheus, free_port
from stream_migrator.settings import load_settings
from tests.integration.helpers import REPO, client_for, settings_env

DOCS = 400
BAD = 4
LIVE = 50


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback URL
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)


def test_readyz_answers_ready_only_while_connected_and_working() -> None:
    """/healthz is liveness (200 under backpressure); /readyz is 200 only while status is ok."""
    state = HealthState("transform", migration="readyz-test")
    with HealthServer(state) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(f"{base}/healthz")[0] == 200
        code, body = _get(f"{base}/readyz")
        assert (code, body["status"]) == (503, "starting")
        state.beat("ok")
        assert _get(f"{base}/readyz")[0] == 200
        state.beat("backpressure", error="target down")
        assert _get(f"{base}/healthz")[0] == 200
        assert _get(f"{base}/readyz")[0] == 503
        with urllib.request.urlopen(f"{base}/metrics", timeout=3) as resp:  # noqa: S310
            text = resp.read().decode()
        assert 'sm_ready{component="transform",migration="readyz-test"} 0.0' in text


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:  # `make test` installs it (ops-tools): missing is a failure
        pytest.fail("prometheus not installed: run `make ops-tools`")
    return path


@pytest.fixture
def procs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    running: dict[str, subprocess.Popen[bytes]] = {}
    yield running
    for proc in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in running.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.integration
def test_prometheus_scrapes_lag_and_throughput_and_alerts_on_stopped_worker(
    prometheus_binary: str,
    settings_kwargs: dict[str, Any],
    procs: dict[str, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Lag and throughput series appear with sane values; stopping the worker fires WorkerDown."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    db, coll = s.split_ns(s.source)
    seed(client[db][coll], DOCS, BAD, random.Random(7))
    client.close()
    ports = {"capture": free_port(), "transform": free_port()}
    env = {**os.environ, **settings_env(s)}
    for role, port in ports.items():
        with (tmp_path / f"{role}.log").open("wb") as log:
            procs[role] = subprocess.Popen(
                [sys.executable, "-m", "stream_migrator", role],
                env={**env, "SM_METRICS_PORT": str(port)},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    jobs = {f"stream-migrator-{role}": [f"127.0.0.1:{port}"] for role, port in ports.items()}
    m = f'migration="{s.migration}"'
    with LocalPrometheus(tmp_path / "prom", jobs, rules=RULES, rule_for="2s") as prom:

        def total(expr: str) -> float:
            return sum(value for _, value in prom.query(expr))

        def caught_up() -> bool:
            for role, proc in procs.items():
                assert proc.poll() is None, (
                    f"{role} exited: {(tmp_path / f'{role}.log').read_text()}"
                )
            written = total(f'sm_events_applied_total{{{m},outcome="written"}}')
            lags = prom.query(f"sm_consumer_partition_lag_events{{{m}}}")
            captured = total(f"sm_events_captured_total{{{m}}}")
            done = written >= DOCS - BAD and captured >= DOCS
            return done and len(lags) == 3 and all(v == 0 for _, v in lags)

        _wait("the target to catch up, as Prometheus sees it", caught_up, timeout=60)

        # Throughput: every good document written exactly once (replays are stale skips).
        assert total(f"sm_events_captured_total{{{m}}}") >= DOCS
        # A bad document seeded in the second capture started is also replayed by the
        # stream (README: snapshot handoff), so it may be quarantined twice, never more.
        assert BAD <= total(f"sm_events_quarantined_total{{{m}}}") <= 2 * BAD
        assert total(f'sm_events_applied_total{{{m},outcome="written"}}') == DOCS - BAD
        # Lag per partition, in events and seconds: one series per partition, caught up.
        lag_seconds = prom.query(f"sm_consumer_lag_seconds{{{m}}}")
        assert sorted(lbl["partition"] for lbl, _ in lag_seconds) == ["0", "1", "2"]
        assert all(0 <= v < 60 for _, v in lag_seconds)
        assert total(f"sm_consumer_lag_events{{{m}}}") == 0
        assert {lbl["component"] for lbl, v in prom.query(f"sm_ready{{{m}}}") if v == 1} == {
            "capture",
            "transform",
        }
        assert _get(f"http://127.0.0.1:{ports['transform']}/readyz")[0] == 200
        # Live writes after the backlog: the rate Grafana plots moves with them.
        client = client_for(s)
        seed(client[db][coll], LIVE, 0, random.Random(8))
        client.close()
        _wait(
            "the live writes to be applied",
            lambda: total(f'sm_events_applied_total{{{m},outcome="written"}}') >= DOCS - BAD + LIVE,
            timeout=30,
        )
        written = f'sm_events_applied_total{{{m},outcome="written"}}'
        assert total(f"max_over_time({written}[1m]) - min_over_time({written}[1m])") == LIVE
        assert total(f"rate({written}[1m])") > 0
        # Apply latency p99 as the dashboard computes it (needs the rate the live writes made).
        p99 = prom.query(
            f"histogram_quantile(0.99, sum by (le) (rate(sm_apply_seconds_bucket{{{m}}}[1m])))"
        )
        assert p99
        assert 0 < p99[0][1] < 10
        assert prom.firing("StreamMigratorWorkerDown") == []

        procs["transform"].send_signal(signal.SIGTERM)
        assert procs["transform"].wait(30) == 0
        _wait(
            "StreamMigratorWorkerDown to fire",
            lambda: bool(prom.firing("StreamMigratorWorkerDown")),
            timeout=30,
        )
        fired = prom.firing("StreamMigratorWorkerDown")
        assert [a["job"] for a in fired] == ["stream-migrator-transform"]
        assert fired[0]["instance"] == f"127.0.0.1:{ports['transform']}"
