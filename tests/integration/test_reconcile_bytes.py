"""Byte-level agreement never bends the canonical rules: key order is not data, BSON types are."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bson import Timestamp
from bson.int64 import Int64

from stream_migrator.events import version_of
from stream_migrator.reconcile import full_compare
from stream_migrator.reconcile.engine import Reconciler
from stream_migrator.reconcile.lag import LagProbe
from stream_migrator.spec import MigrationSpec
from stream_migrator.spec.reshape_steps import Rename
from tests.integration.test_reconcile_verdicts import colls, settings_with_topic

pytestmark = pytest.mark.integration


def test_reordered_copies_agree_and_retyped_ones_diverge_both_compares(
    settings_kwargs: dict[str, Any],
) -> None:
    """Reordered keys agree; 1.0, true or long 1 for int 1 is a type divergence, 3 for 2 a value."""
    s = settings_with_topic(settings_kwargs, reconcile_bucket_size=16)
    client, src, tgt = colls(s)
    spec = MigrationSpec(
        name="bytes.rename", source_version="1", target_version="2", steps=(Rename("a", "b"),)
    )
    docs = [{"_id": i, "a": i, "n": 1, "sub": {"x": 1, "y": 2}} for i in range(60)]
    src.insert_many(docs)
    meta = {"v": Int64(version_of(Timestamp(int(time.time()) + 5, 0)))}
    copies = [{**spec.migrate(d), "_sm": meta} for d in docs]
    for i in range(10):  # the same content in another key order, at both levels
        copies[i] = {"_id": i, "_sm": meta, "sub": {"y": 2, "x": 1}, "n": 1, "b": i}
    copies[10]["n"] = 1.0
    copies[11]["n"] = True
    copies[12]["n"] = Int64(1)
    copies[13]["sub"] = {"x": 1, "y": 3}
    tgt.insert_many(copies)

    compared = full_compare(src, tgt, spec)
    probe = LagProbe(s.kafka_bootstrap, s.consumer_group, s.changes_topic)
    try:
        report = Reconciler(s, client, probe, spec=spec).run()
    finally:
        probe.close()
    client.close()

    assert (compared.source_count, compared.target_count) == (60, 60)
    assert (compared.different, compared.mismatches) == (4, 4), compared.examples
    assert report.counts["type"] == 3, report.samples
    assert report.counts["value"] == 1, report.samples
    assert report.divergent == 4
    typed = {d["_id"] for d in report.samples["type"]}
    assert typed == {10, 11, 12}
