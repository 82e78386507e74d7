"""Reconciler benchmark: compare rate and memory against collection size (figures, no asserts).

Seeds N orders on the source and their correct target documents (written
directly, no pipeline), runs a full reconcile with a fixed bucket size, and
prints documents compared per second and the Python heap peak (tracemalloc)
for each N. A flat peak across N = 10x, 50x the bucket is the point: the
compare holds O(bucket), not O(collection). It also times ``full_compare`` (the
one merge join the rollback verification, the simple gate and the demo use) on
the same data, so the cost of its canonical-hash equality shows beside it.

    .venv/bin/python benchmarks/reconcile.py [--sizes 10000 50000] [--bucket 1000]

Needs SM_KAFKA_BOOTSTRAP / SM_MONGO_URI (start them with `stream-migrator infra up`).
"""

from __future__ import annotations

import argparse
import os
import random
import time
import tracemalloc
import uuid

from bson import Timestamp
from bson.int64 import Int64

from stream_migrator.demo import seed
from stream_migrator.events import version_of
from stream_migrator.mongo import connect
from stream_migrator.reconcile import full_compare, load_reconcile_settings, run_reconcile
from stream_migrator.spec import get_spec


def run_once(docs: int, bucket: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    db = f"rbench_{tag}"
    settings = load_reconcile_settings(
        None,
        migration=f"rbench-{tag}",
        source=f"{db}.orders",
        target=f"{db}.orders_v2",
        metadata_db=f"rbench_meta_{tag}",
        reconcile_bucket_size=bucket,
        log_level="warning",
    )
    client = connect(os.environ["SM_MONGO_URI"], app="bench", timeout_ms=120_000)
    src, tgt = client[db]["orders"], client[db]["orders_v2"]
    seed(src, docs, 0, random.Random(1))
    spec = get_spec(settings.spec)
    batch = []
    # A version after the seeding, as if the pipeline had applied every document.
    applied = Int64(version_of(Timestamp(int(time.time()) + 5, 0)))
    for doc in src.find({}).batch_size(2_000):  # the stand-in ignores the 16 MB batch cap
        try:
            batch.append({**spec.transform(doc), "_sm": {"v": applied}})
        except Exception:  # noqa: BLE001,S112 - untransformable seeds stay out of the target
            continue
        if len(batch) >= 5000:
            tgt.insert_many(batch)
            batch = []
    if batch:
        tgt.insert_many(batch)
    tracemalloc.start()
    started = time.monotonic()
    report = run_reconcile(settings, restart=True)
    seconds = time.monotonic() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.monotonic()
    compare = full_compare(src, tgt, spec)
    compare_seconds = time.monotonic() - started
    client.drop_database(db)
    client.drop_database(settings.metadata_db)
    client.close()
    return {
        "docs": docs,
        "seconds": seconds,
        "rate": (report.source_count + report.target_count) / seconds,
        "peak_mib": peak / 2**20,
        "max_bucket_entries": report.max_bucket_entries,
        "divergent": report.divergent,
        "compare_rate": (compare.source_count + compare.target_count) / compare_seconds,
        "compare_mismatches": compare.mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--bucket", type=int, default=1000)
    args = parser.parse_args()
    print(f"bucket {args.bucket} documents; tracemalloc peak of the reconcile call")
    print(
        f"{'docs':>8} {'x bucket':>8} {'seconds':>8} {'docs/s':>9} {'peak MiB':>9} {'held':>6} "
        f"{'full_compare docs/s':>20}"
    )
    for n in args.sizes:
        r = run_once(n, args.bucket)
        print(
            f"{n:8d} {n / args.bucket:8.0f} {r['seconds']:8.1f} {r['rate']:9,.0f} "
            f"{r['peak_mib']:9.2f} {r['max_bucket_entries']:6.0f} {r['compare_rate']:20,.0f}"
        )


if __name__ == "__main__":
    main()
