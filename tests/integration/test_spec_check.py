"""`spec check --mongo-uri`: the round trip on a sample of real source documents."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest

from stream_migrator.demo.data import v1_order
from stream_migrator.mongo import connect

pytestmark = pytest.mark.integration


def _spec_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_migrator", "spec", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _seed(mongo_uri: str, ns: str, docs: list[dict[str, Any]]) -> None:
    db, coll = ns.split(".")
    client = connect(mongo_uri, app="test")
    try:
        client[db][coll].insert_many(docs)
    finally:
        client.close()


def test_spec_check_samples_real_documents_and_passes(mongo_uri: str, unique: str) -> None:
    """Demo orders read back from MongoDB (BSON types intact) all round-trip: exit 0."""
    ns = f"db_{unique}.orders"
    rng = random.Random(5)
    _seed(mongo_uri, ns, [v1_order(rng, i) for i in range(60)])
    done = _spec_check(
        "orders.v1_to_v2", "--mongo-uri", mongo_uri, "--source", ns, "--sample", "50"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sample: 50 documents from {ns}" in done.stdout
    assert "round trip         50 of 50 documents" in done.stdout


def test_spec_check_reports_real_documents_that_do_not_round_trip(
    mongo_uri: str, unique: str
) -> None:
    """Explicit 'pending' statuses and int totals do not come back as they were: exit 1."""
    ns = f"db_{unique}.orders"
    rng = random.Random(6)
    pending = {**v1_order(rng, 0), "status": "pending"}
    int_total = {**v1_order(rng, 1), "total": 7}
    bad = {**v1_order(rng, 2), "address": "no commas here"}
    _seed(mongo_uri, ns, [pending, int_total, bad])
    done = _spec_check("orders.v1_to_v2", "--mongo-uri", mongo_uri, "--source", ns)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert f"_id={pending['_id']!r}: inverse(transform(d)) != d: status: was 'pending'" in out
    assert f"_id={int_total['_id']!r}: inverse(transform(d)) != d: total: was 7 (int)" in out
    assert "rejected           1 (would go to quarantine)" in out
    assert "source schema      1 violations (orders.v1)" in out


def test_spec_check_of_an_empty_collection_exits_1_unless_allow_empty(
    mongo_uri: str, unique: str
) -> None:
    """No document in the sampled collection: nothing was proven, exit 1; --allow-empty: 0."""
    ns = f"db_{unique}.orders"
    done = _spec_check("orders.v1_to_v2", "--mongo-uri", mongo_uri, "--source", ns)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"(no documents: {ns} has none)" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("RESULT NOTHING CHECKED")
    allowed = _spec_check(
        "orders.v1_to_v2", "--mongo-uri", mongo_uri, "--source", ns, "--allow-empty"
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "RESULT OK: 0 documents checked (--allow-empty)" in allowed.stdout
