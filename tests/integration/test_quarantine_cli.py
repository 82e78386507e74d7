"""`stream-migrator quarantine list|show|replay` on a real quarantine topic."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator import spec as spec_pkg
from stream_migrator.settings import load_settings
from stream_migrator.transform.quarantine import read_quarantine
from tests.integration.helpers import cli, client_for, pipeline, settings_env, wait_until_match

pytestmark = pytest.mark.integration


def test_quarantine_list_show_replay_of_malformed_document(
    settings_kwargs: dict[str, Any],
) -> None:
    """A malformed order is listed with _id and reason, shown in full, and still fails replay."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    bad_id = ObjectId()
    client[s.split_ns(s.source)[0]]["orders"].insert_many(
        [
            {"_id": bad_id, "cust_name": "b", "address": "nowhere", "total": 1},
            {"_id": ObjectId(), "cust_name": "g", "address": "1 A St, Town, 12345", "total": 2},
        ]
    )
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
    env = settings_env(s)

    listed = cli("quarantine", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert str(bad_id) in listed.stdout
    assert "transform" in listed.stdout
    assert "address" in listed.stdout
    first = next(line for line in listed.stdout.splitlines() if str(bad_id) in line).split()[0]

    shown = cli("quarantine", "show", first, env=env)
    assert shown.returncode == 0, shown.stderr
    assert '"address": "nowhere"' in shown.stdout
    assert "sm.reason" in shown.stdout
    assert "op        " in shown.stdout

    replayed = cli("quarantine", "replay", first, env=env)
    assert replayed.returncode == 1
    assert "still failing: address" in replayed.stdout
    target = client[s.split_ns(s.target)[0]]["orders_v2"]
    assert target.find_one({"_id": bad_id}) is None

    missing = cli("quarantine", "show", "0:99999", env=env)
    assert missing.returncode == 1
    assert "no quarantined event at 0:99999" in missing.stdout
    client.close()


def test_quarantine_replay_after_spec_fix_lands_document(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """After the spec is fixed, `quarantine replay --spec FIXED` writes the quarantined document."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    bad_id = ObjectId()
    client[s.split_ns(s.source)[0]]["orders"].insert_one(
        {"_id": bad_id, "cust_name": "b", "address": "nowhere", "total": 1}
    )
    with pipeline(s):
        deadline = time.monotonic() + 30
        while not read_quarantine(s.kafka_bootstrap, s.quarantine_topic):
            assert time.monotonic() < deadline, "the malformed order never reached quarantine"
            time.sleep(0.3)
    builtin = Path(spec_pkg.__file__).parent / "builtin" / "orders.v1_to_v2.yaml"
    fixed = tmp_path / "orders.fixed.yaml"
    strict = r"'(?P<street>[^,]+),(?P<city>[^,]+),(?P<zip>\s*[0-9A-Za-z -]{3,10})'"
    lenient = r"'(?P<street>[^,]+),?(?P<city>[^,]*),?(?P<zip>[^,]*)'"
    text = builtin.read_text()
    assert strict in text
    fixed.write_text(text.replace(strict, lenient))
    env = {**settings_env(s), "SM_SPEC": str(fixed)}
    replayed = cli("quarantine", "replay", env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    # At-least-once: the same bad document may sit in quarantine more than once.
    assert re.search(
        r"replayed \d+: [1-9]\d* applied, \d+ stale .*, 0 still failing", replayed.stdout
    )
    target = client[s.split_ns(s.target)[0]]["orders_v2"]
    doc = target.find_one({"_id": bad_id})
    assert doc is not None
    assert doc["address"]["street"] == "nowhere"
    again = cli(
        "quarantine", "replay", "--progress-interval", "0", env=env
    )  # idempotent: the guard says stale
    assert again.returncode == 0
    assert "0 applied" in again.stdout
    # Not on a terminal: progress is JSON log lines on stderr, one per event, then the end.
    records = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
    progress = [r for r in records if r["task"] == f"quarantine replay {s.migration}"]
    events = int(re.search(r"replayed (\d+):", again.stdout)[1])  # type: ignore[index]
    assert [r["done"] for r in progress if r["event"] == "progress"] == list(range(1, events + 1))
    assert progress[-1]["event"] == "progress.done"
    assert (progress[-1]["done"], progress[-1]["total"], progress[-1]["unit"]) == (
        events,
        events,
        "events",
    )
    client.close()


def test_quarantine_list_when_empty(settings_kwargs: dict[str, Any]) -> None:
    """An empty (or not yet created) quarantine topic is reported, not an error."""
    s = load_settings(**settings_kwargs)
    out = cli("quarantine", "list", env=settings_env(s))
    assert out.returncode == 0, out.stderr
    assert "is empty" in out.stdout


def test_quarantine_replay_of_oversize_capture_stub_refuses(
    settings_kwargs: dict[str, Any],
) -> None:
    """An oversize event (capture kept only its _id) is not replayable: exit 1, says what to do."""
    s = load_settings(**{**settings_kwargs, "max_event_bytes": 64_000})
    client = client_for(s)
    big = ObjectId()
    client[s.split_ns(s.source)[0]]["orders"].insert_one(
        {"_id": big, "cust_name": "big", "total": 1, "blob": "x" * 100_000}
    )
    with pipeline(s, capture=True):
        deadline = time.monotonic() + 30
        while not read_quarantine(s.kafka_bootstrap, s.quarantine_topic):
            assert time.monotonic() < deadline, "the oversize order never reached quarantine"
            time.sleep(0.3)
    stub = read_quarantine(s.kafka_bootstrap, s.quarantine_topic)[0]
    assert stub.stage == "capture"
    env = settings_env(s)

    replayed = cli("quarantine", "replay", stub.position, env=env)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    out = replayed.stdout
    assert "cannot be replayed from the quarantine" in out
    assert str(big) in out
    assert "SM_MAX_EVENT_BYTES" in out
    assert "max.message.bytes" in out
    assert "--resnapshot" in out
    assert "1 cannot be replayed" in out
    assert "stale" not in out.splitlines()[0]
    target = client[s.split_ns(s.target)[0]]["orders_v2"]
    assert target.find_one({"_id": big}) is None
    # Left where it is: still listed for the operator after the failed replay.
    assert [e.position for e in read_quarantine(s.kafka_bootstrap, s.quarantine_topic)] == [
        stub.position
    ]
    client.close()
