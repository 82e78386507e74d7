"""`reconcile` field coverage on a deep document: summarized by default, every path with --all."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bson import Timestamp
from bson.int64 import Int64

from stream_migrator.events import version_of
from stream_migrator.reconcile import load_reconcile_settings
from stream_migrator.reconcile.report import COVERAGE_MAX_DEPTH
from tests.integration.helpers import cli, client_for, settings_env

pytestmark = pytest.mark.integration

#: A spec without a target schema: coverage then lists every populated path it met.
_SPEC = """\
name: deep.v1_to_v2
source: {db: shop, collection: deep}
target: {db: shop, collection: deep_v2}
schema: null
from_version: 1
to_version: 2
steps:
  - rename: {from: label, to: name}
"""


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for n in reversed(range(depth - 1)):
        doc = {f"f{n}": doc}
    return doc


def test_reconcile_summarizes_the_coverage_of_an_80_deep_document(
    settings_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """One 80-deep document: a few coverage lines and a pointer to --all, which lists all 80."""
    spec = tmp_path / "deep.yaml"
    spec.write_text(_SPEC)
    s = load_reconcile_settings(
        None, **settings_kwargs, spec=str(spec), reconcile_recheck_timeout_s=2
    )
    client = client_for(s)
    sdb, scoll = s.split_ns(s.source)
    tdb, tcoll = s.split_ns(s.target)
    source = {"_id": 1, "label": "x", **_nested(80)}
    target = {"_id": 1, "name": "x", **_nested(80)}
    applied = Int64(version_of(Timestamp(int(time.time()) + 5, 0)))
    client[sdb][scoll].insert_one(source)
    client[tdb][tcoll].insert_one({**target, "_sm": {"v": applied}})
    client.close()
    env = settings_env(s)

    def coverage(*flags: str) -> list[str]:
        done = cli("reconcile", s.migration, *flags, env=env, timeout=120)
        assert "VERDICT" in done.stdout, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        start = next(n for n, line in enumerate(lines) if line.startswith("field coverage"))
        end = next(n for n, line in enumerate(lines) if line.startswith("buckets "))
        return lines[start + 1 : end]

    summarized = coverage()
    assert len(summarized) <= COVERAGE_MAX_DEPTH + 4, summarized
    assert any(f"({80 - COVERAGE_MAX_DEPTH} deeper fields)" in line for line in summarized)
    assert "reconcile --all" in summarized[-1]
    every = coverage("--all")
    assert len(every) == 82  # _id, name and the 80 levels of f0.f1...leaf
    assert all(line.rstrip().endswith("100.00%") for line in every)
