"""Rollout test material shared by the in-process and the subprocess tests: plans, orders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from stream_migrator.app import run_reverse_capture, run_reverse_transform
from stream_migrator.rollout.reverse import start_position
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import StageThread, client_for, pipeline, wait_until_match

PLAN = """
[plan]
evaluation_interval_s = 0.5
advance_every_s = {advance_every}
retention_s = {retention}
tiers = [
  {{ name = "internal", tenants = ["staff"] }},
  {{ name = "10%", percent = 10 }},
  {{ name = "50%", percent = 50 }},
  {{ name = "100%", percent = 100 }},
]
[collections."{source}"]
fields = []
[collections."{target}"]
fields = []
[[migration]]
name = "{name}"
spec = "orders.v1_to_v2"
source = "{source}"
target = "{target}"
[migration.fences]
max_lag_events = {max_lag_events}
max_divergence_ratio = {max_divergence}
max_error_rate = 0.5
[migration.rollback]
after_breaches = {after_breaches}
"""


def order(i: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "cust_name": f"c{i}",
        "address": f"{i} Main St, Town, 1000{i % 10}",
        "total": i + 0.25,
        "status": "paid",
    }


def plan_file(
    tmp_path: Path,
    s: Settings,
    *,
    advance_every: float = 0,
    retention: float = 0,
    max_lag_events: int = 100_000,
    max_divergence: float = 0.05,
    after_breaches: int = 0,
) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(
        PLAN.format(
            name=s.migration,
            source=s.source,
            target=s.target,
            advance_every=advance_every,
            retention=retention,
            max_lag_events=max_lag_events,
            max_divergence=max_divergence,
            after_breaches=after_breaches,
        )
    )
    return path


def start_reverse_stream(s: Settings) -> list[StageThread]:
    """Position the reverse capture at "now", then start it and the reverse worker."""
    start_position(s)
    threads = [StageThread(run_reverse_capture, s), StageThread(run_reverse_transform, s)]
    for t in threads:
        t.start()
    return threads


def stop_all(threads: list[StageThread]) -> None:
    for t in threads:
        t.stop()


@pytest.fixture
def forward_migrated(settings_kwargs: dict[str, Any]) -> Iterator[Settings]:
    """40 orders migrated by a forward pipeline that keeps running (threads)."""
    s = load_settings(**settings_kwargs)
    client = client_for(s)
    db, coll = s.split_ns(s.source)
    client[db][coll].insert_many([order(i) for i in range(40)])
    with pipeline(s) as stages:
        wait_until_match(s, stages=stages)
        yield s
    client.close()
