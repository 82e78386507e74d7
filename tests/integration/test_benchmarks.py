"""The side-by-side benchmark script runs end to end (tiny sizes: its shape, not its speed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import backends

pytestmark = pytest.mark.integration

SCRIPT = backends.REPO / "benchmarks" / "side_by_side.py"
KEYS = (
    "ratio_vs_connect_1w",
    "ratio_vs_connect_2w",
    "ratio_vs_ceiling",
    "capture_us_per_event",
    "transform_us_per_event",
    "p99_ms_at_1000",
)


def test_side_by_side_prints_table_and_ratio_line(backend: backends.Backend) -> None:
    """Every phase runs on the session's servers; the last two lines parse into positive figures.

    The last line's ratios come from the copy (the same work as the Connect copy), the
    line before it gives them from the drain with live writes.
    """
    env = {
        **os.environ,
        "SM_KAFKA_BOOTSTRAP": backend.kafka_bootstrap,
        "SM_MONGO_URI": backend.mongo_uri,
    }
    # 100 writes/s: any machine holds it, so p99_ms_at_1000 is "n/a" by design here.
    args = ["--docs", "1000", "--live-seconds", "1", "--latency-seconds", "2"]
    args += ["--latency-seed", "200", "--rates", "100", "--timeout", "240"]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=backends.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    figures = dict(part.split("=") for part in lines[-1].split())
    assert tuple(figures) == KEYS
    assert figures.pop("p99_ms_at_1000") == "n/a"
    assert all(float(v) > 0 for v in figures.values()), lines[-1]
    drain = dict(part.split("=") for part in lines[-2].split())
    assert tuple(drain) == tuple(f"drain_{k}" for k in KEYS[:3])
    assert all(float(v) > 0 for v in drain.values()), lines[-2]
    budget = dict(part.split("=") for part in lines[-3].split())
    assert tuple(budget) == tuple(
        f"{k}_{run}"
        for run in ("1w", "2w", "connect")
        for k in ("all_cpu_us_per_doc", "cores_busy")
    )
    # The servers run on this machine (the session's stack), so each copy has a budget.
    # Busy cores are a share of all of them: more would mean CPU counted twice.
    assert all(float(v) > 0 for v in budget.values()), lines[-3]
    assert all(float(budget[f"cores_busy_{r}"]) <= 1 for r in ("1w", "2w", "connect"))
    table = "\n".join(lines[:-3])
    assert table.count("every process's CPU: capture ") == 2, table
    assert re.search(r"every process's CPU: Connect \d+ \+ stand-in \d+ \+ Kafka \d+ = ", table)
    for row in (
        "stand-in insert_many(1000)",
        "stand-in change-stream read",
        "Kafka produce 1 KB acks=all idempotent",
        "stream-migrator copy, 1 worker",
        "stream-migrator copy, 2 workers",
        "stream-migrator drain, 1 worker",
        "stream-migrator drain, 2 workers",
        "Kafka Connect source -> sink copy",
    ):
        assert re.search(rf"^{re.escape(row)}\s+[\d,]+\b", table, re.M), row
    assert re.search(
        r"^latency at 100 writes/s\s+[\d,]+\s+p50 \d+ ms, p99 \d+ ms.*, machine \d+ % busy "
        r"\(writers \d+, observers \d+, capture \d+, transform \d+, stand-in \d+, Kafka \d+\)",
        table,
        re.M,
    )
