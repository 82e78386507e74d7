"""The reconciler SIGKILLed mid-compare: the rerun's verdict is still right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from stream_migrator.reconcile import gate
from tests.integration.helpers import REPO, settings_env
from tests.integration.test_reconcile_verdicts import (
    colls,
    mixed_ids,
    seed_both_sides,
    settings_with_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _reconcile(env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_migrator", "reconcile", "--json", *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_reconcile_sigkilled_inside_int_ids_then_rerun_is_not_ready(
    settings_kwargs: dict[str, Any],
) -> None:
    """SIGKILL inside the int ids: the resumed run and a fresh gate both find the string one."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=50)
    client, _src, tgt = colls(s)
    seed_both_sides(s, mixed_ids(1000))
    tgt.update_one({"_id": "s500"}, {"$set": {"customer.name": "WRONG"}})
    env = {
        **os.environ,
        **settings_env(s),
        "SM_RECONCILE_MAX_DOCS_PER_SECOND": "400",  # ~2.5 s inside the ints
        "SM_RECONCILE_BUCKET_SIZE": "50",
        "SM_RECONCILE_MAX_LAG_SECONDS": "3600",
    }
    runs = client[s.metadata_db]["reconcile_runs"]
    proc = _reconcile(env)
    deadline = time.monotonic() + 60
    state: dict[str, Any] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        state = runs.find_one({"_id": f"{s.migration}/reconcile"}) or {}
        if state.get("buckets", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    state = runs.find_one({"_id": f"{s.migration}/reconcile"}) or {}
    last = state["segments"][0].get("last_id")
    assert isinstance(last, int), f"killed outside the ints (last _id {last!r})"
    assert last < 999, f"killed outside the ints (last _id {last!r})"

    rerun = _reconcile({**env, "SM_RECONCILE_MAX_DOCS_PER_SECOND": "0"})
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 1, err[-3000:]  # NOT READY
    report = json.loads(out)
    assert report["resumed"] is True
    assert report["source_count"] == 3000
    assert report["counts"]["value"] == 1
    assert report["samples"]["value"][0]["_id"] == "s500"
    assert report["verdict"]["reasons"][0].startswith("1 divergent documents (value 1)")

    verdict = gate(s)  # the rollout gate: always a fresh, full run
    assert not verdict.ready
    assert verdict.reasons[0].startswith("1 divergent documents (value 1)")
    client.close()
