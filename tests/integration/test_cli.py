"""The `stream-migrator` command itself, run as a real process against the real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.app import run_capture, run_transform
from stream_migrator.kafka_security import check_kafka_access
from stream_migrator.settings import load_settings
from tests import backends
from tests.integration.helpers import (
    REPO,
    StageThread,
    cli,
    client_for,
    settings_env,
    wait_until_match,
)
from tests.unit.tripwire import write_tripwire_module

pytestmark = pytest.mark.integration


def test_demo_runs_small(backend: backends.Backend) -> None:
    """`demo` seeds, migrates under live writes, compares and reports OK."""
    env = {"SM_KAFKA_BOOTSTRAP": backend.kafka_bootstrap, "SM_MONGO_URI": backend.mongo_uri}
    out = cli(
        "demo",
        "--docs",
        "2000",
        "--live-seconds",
        "3",
        "--live-rate",
        "100",
        "--bad-docs",
        "2",
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "RESULT                OK: target matches source" in out.stdout
    assert "full compare          0 mismatches" in out.stdout
    assert "events quarantined" in out.stdout
    assert "capture stopped (exit code 0)" in out.stdout
    assert "transform stopped (exit code 0)" in out.stdout
    assert re.search(r"\[\s*\d+\.\ds\] captured\s+\d+\s+applied", out.stdout)  # progress


def test_demo_rollout_halts_on_breach_and_rolls_back(backend: backends.Backend) -> None:
    """`demo --rollout` advances to canary, halts + reverts on a lag breach, rolls back."""
    env = {"SM_KAFKA_BOOTSTRAP": backend.kafka_bootstrap, "SM_MONGO_URI": backend.mongo_uri}
    out = cli(
        "demo",
        "--docs",
        "1000",
        "--live-seconds",
        "2",
        "--live-rate",
        "50",
        "--bad-docs",
        "2",
        "--rollout",
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "-> canary 10% +1 tenants (tier 1)" in text
    assert re.search(r"HALTED after [\d.]+ s: fence breached: lag_events \d+ > 200", text)
    assert "exposure reverted to the last safe tier: canary 0% +1 tenants (tier 0)" in text
    assert re.search(r"rolled_back .*, 2 mismatches \(2 seeded bad documents.*read path old", text)
    actions = [line.split()[2] for line in text.splitlines() if re.match(r"20\d\d-.*  demo ", line)]
    assert actions == [
        "init",
        *["advance"] * 4,
        "fence_breach",
        "rollback_start",
        "rollback_route_old",  # verified old: every key routes old, routers acknowledge
        "rollback",
    ]
    assert "RESULT                OK: target matches source" in text


def test_transform_command_logs_json_and_stops_on_sigterm(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """`transform` applies changes, logs JSON lines off a TTY, and exits 0 on SIGTERM."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    client[s.split_ns(s.source)[0]]["orders"].insert_many(
        [{"_id": ObjectId(), "cust_name": "x", "total": i} for i in range(100)]
    )
    log = tmp_path / "transform.log"
    capture = StageThread(run_capture, s)
    capture.start()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_migrator", "transform"],
            cwd=REPO,
            env={**os.environ, **settings_env(s)},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_match(s)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            capture.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert code == 0, log.read_text()[-2000:]
    assert {"transform.start", "partitions.assigned", "transform.stopped"} <= events
    stopped = next(line for line in lines if line["event"] == "transform.stopped")
    assert stopped["reason"] == "SIGTERM"
    assert stopped["migration"] == s.migration
    client.close()


def test_compare_reports_match_then_divergence(settings_kwargs: dict[str, Any]) -> None:
    """`compare` exits 0 on MATCH and 1 naming the divergence after the target is tampered."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    db = s.split_ns(s.source)[0]
    ids = [ObjectId() for _ in range(3)]
    client[db]["orders"].insert_many([{"_id": i, "cust_name": "n", "total": 1} for i in ids])
    capture = StageThread(run_capture, s)
    transform = StageThread(run_transform, s)
    capture.start()
    transform.start()
    try:
        wait_until_match(s)
    finally:
        capture.stop()
        transform.stop()
    env = settings_env(s)
    ok = cli("compare", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "MATCH" in ok.stdout
    client[db]["orders_v2"].update_one({"_id": ids[0]}, {"$set": {"status": "tampered"}})
    client[db]["orders_v2"].delete_one({"_id": ids[1]})
    bad = cli("compare", env=env)
    assert bad.returncode == 1
    assert "DIVERGED: 2 mismatches" in bad.stdout
    assert f"missing in target: _id={ids[1]!r}" in bad.stdout
    client.close()


def test_bad_config_stops_before_touching_data(mongo_uri: str, unique: str) -> None:
    """A bad setting exits 2 with one line naming it; the source database is not created."""
    out = cli("capture", "--source", "nodot", "--mongo-uri", mongo_uri)
    assert out.returncode == 2
    assert "SM_SOURCE" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli(
        "transform",
        "--spec",
        "orders.v9",
        "--source",
        f"cfg_{unique}.orders",
        "--mongo-uri",
        mongo_uri,
        "--kafka-bootstrap",
        "127.0.0.1:1",
    )
    assert out.returncode == 2
    assert "unknown migration spec 'orders.v9'" in out.stderr
    client = client_for(load_settings(mongo_uri=mongo_uri))
    assert f"cfg_{unique}" not in client.list_database_names()
    client.close()


@pytest.mark.parametrize(
    "verb", [["transform"], ["reconcile", "M"]], ids=["transform", "reconcile"]
)
def test_process_refuses_a_spec_hook_it_was_not_allowed(
    verb: list[str], settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """A spec with a hook: exit 2 naming the hook and how to allow it; the module never runs."""
    module, marker = write_tripwire_module(tmp_path, "one")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\nfrom_version: 1\nto_version: 2\nschema: null\nsteps:\n"
        f"  - computed: {{field: n, hook: '{module}:one'}}\n"
    )
    s = load_settings(**{**settings_kwargs, "spec": str(spec)})
    out = cli(*[s.migration if a == "M" else a for a in verb], env=settings_env(s))
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"hook '{module}:one' is not allowed" in out.stderr
    assert f"SM_HOOKS_ALLOWED={module}" in out.stderr
    assert not marker.exists()


def test_config_prints_masked_settings() -> None:
    """`config` prints the effective settings as JSON with the password masked."""
    out = cli("config", "--mongo-uri", "mongodb://u:secret@h:1/", "--migration", "m-9")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["migration"] == "m-9"
    assert data["mongo_uri"] == "mongodb://u:***@h:1/"


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "secure-kafka"])
def test_infra_up_status_down_on_a_fresh_state_dir(tmp_path: Path, secure: bool) -> None:
    """`infra up` starts both servers, `status` says where they answer, `down` stops them.

    With --secure-kafka the printed SM_KAFKA_* settings reach a SASL_SSL listener, and the
    generated password is in a 0600 file, never on the terminal.
    """
    state = str(tmp_path / "stack")
    up = cli(
        "infra", "up", "--state-dir", state, *(["--secure-kafka"] if secure else []), timeout=180
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        exports = dict(
            line.split("export ", 1)[1].split("=", 1)
            for line in up.stdout.splitlines()
            if "export " in line
        )
        bootstrap = exports["SM_KAFKA_BOOTSTRAP"]
        out = cli("infra", "status", "--state-dir", state)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "kafka" in out.stdout
        assert bootstrap in out.stdout
        assert "mongo" in out.stdout
        assert out.stdout.count("answering") == (3 if secure else 2)
        if secure:
            password_file = Path(state) / "kafka-sasl-password"
            assert password_file.stat().st_mode & 0o777 == 0o600
            password = password_file.read_text()
            assert password not in up.stdout
            settings = load_settings(
                kafka_bootstrap=bootstrap,
                kafka_security_protocol=exports["SM_KAFKA_SECURITY_PROTOCOL"],
                kafka_sasl_mechanism=exports["SM_KAFKA_SASL_MECHANISM"],
                kafka_sasl_username=exports["SM_KAFKA_SASL_USERNAME"],
                kafka_sasl_password=password,
                kafka_ssl_ca_location=exports["SM_KAFKA_SSL_CA_LOCATION"],
            )
            check_kafka_access(settings.kafka_bootstrap, settings.kafka_client, timeout=30)
    finally:
        down = cli("infra", "down", "--state-dir", state)
    assert down.returncode == 0
    assert "stopped: " in down.stdout
    assert "mongo" in down.stdout
    after = cli("infra", "status", "--state-dir", state)
    assert after.returncode == 1
    assert "no local stack recorded" in after.stdout


def test_infra_status_without_stack(tmp_path: Path) -> None:
    """`infra status` on an empty state dir says nothing runs and exits 1."""
    out = cli("infra", "status", "--state-dir", str(tmp_path))
    assert out.returncode == 1
    assert "no local stack recorded" in out.stdout


def test_infra_up_without_java_is_one_sentence(tmp_path: Path) -> None:
    """With no `java` on PATH, `infra up` exits 3 with one clear sentence."""
    out = cli("infra", "up", "--state-dir", str(tmp_path), env={"PATH": str(tmp_path)})
    assert out.returncode == 3
    assert "Java 17 or newer is needed" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
