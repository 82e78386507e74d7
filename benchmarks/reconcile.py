"""Reconciler benchmark: compare rate, CPU and memory against collection size (figures, no asserts).

Seeds N orders on the source and their correct target documents (written
directly, no pipeline), runs a full reconcile with a fixed bucket size, and
prints documents compared per second (both sides counted), the process CPU per
document and the Python heap peak (tracemalloc) for each N. A flat peak across
N = 10x, 50x the bucket is the point: the compare holds O(bucket), not
O(collection). It also times ``full_compare`` (the one merge join the rollback
verification, the simple gate and the demo use) on the same data, and the
stand-in's own ceiling: one sorted ``find()`` by ``_id`` over both collections,
as dicts and as ``RawBSONDocument`` (no decoding), so the reconcile rate reads
as a share of what the server can deliver ("vs scan", "vs raw").

    .venv/bin/python benchmarks/reconcile.py [--sizes 10000 50000] [--bucket 1000] [--profile F]

``--profile F`` writes a cProfile of an extra reconcile call (the last N) to ``F``.
Each size inserts 2 N documents and drops them after, but the stand-in's oplog keeps
every insert: for sizes of 50,000 and more use a private stack (a shared stand-in
with a 3 GB heap died of OutOfMemoryError after a series of such runs).
Needs SM_KAFKA_BOOTSTRAP / SM_MONGO_URI (start them with `stream-migrator infra up`).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import time
import tracemalloc
import uuid
from typing import Any

from bson import Timestamp
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from stream_migrator.demo.data import seed
from stream_migrator.events import version_of
from stream_migrator.mongo import connect
from stream_migrator.reconcile import full_compare, load_reconcile_settings, run_reconcile
from stream_migrator.spec import get_spec


def scan_rate(colls: list[Collection[Any]], *, raw: bool) -> tuple[float, float]:
    """Documents per second and CPU seconds per document of one sorted pass over ``colls``."""
    n = 0
    started, cpu = time.monotonic(), time.process_time()
    for plain in colls:
        coll = plain
        if raw:
            coll = plain.with_options(
                codec_options=coll.codec_options.with_options(document_class=RawBSONDocument)
            )
        for _doc in coll.find({}).sort("_id", 1).batch_size(2_000):
            n += 1
    return n / (time.monotonic() - started), (time.process_time() - cpu) / max(1, n)


def run_once(docs: int, bucket: int, profile: str | None = None) -> dict[str, float]:
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
    scan, scan_cpu = scan_rate([src, tgt], raw=False)
    raw_scan, raw_cpu = scan_rate([src, tgt], raw=True)
    # Timed alone: tracemalloc and cProfile each multiply the cost of every allocation.
    started, cpu = time.monotonic(), time.process_time()
    report = run_reconcile(settings, restart=True)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_reconcile, settings, restart=True)
        profiler.dump_stats(profile)
    tracemalloc.start()
    run_reconcile(settings, restart=True)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started, compare_cpu = time.monotonic(), time.process_time()
    compare = full_compare(src, tgt, spec)
    compare_seconds = time.monotonic() - started
    compare_cpu = time.process_time() - compare_cpu
    client.drop_database(db)
    client.drop_database(settings.metadata_db)
    client.close()
    counted = report.source_count + report.target_count
    return {
        "docs": docs,
        "seconds": seconds,
        "rate": counted / seconds,
        "cpu_us": cpu / counted * 1e6,
        "scan_rate": scan,
        "scan_cpu_us": scan_cpu * 1e6,
        "raw_scan_rate": raw_scan,
        "raw_scan_cpu_us": raw_cpu * 1e6,
        "compare_cpu_us": compare_cpu / (compare.source_count + compare.target_count) * 1e6,
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
    parser.add_argument("--profile", help="write a cProfile of the reconcile call here")
    args = parser.parse_args()
    print(
        f"bucket {args.bucket} documents; docs/s and CPU µs per document count both sides; "
        "tracemalloc peak of a second reconcile call; scan = sorted find() of both collections"
    )
    print(
        f"{'docs':>8} {'x bucket':>8} {'seconds':>8} {'docs/s':>9} {'µs/doc':>7} "
        f"{'peak MiB':>9} {'held':>6} {'compare/s':>10} {'µs/doc':>7} "
        f"{'scan/s':>8} {'µs/doc':>7} {'raw/s':>8} {'µs/doc':>7} {'vs scan':>7} {'vs raw':>7}"
    )
    for n in args.sizes:
        r = run_once(n, args.bucket, args.profile)
        print(
            f"{n:8d} {n / args.bucket:8.0f} {r['seconds']:8.1f} {r['rate']:9,.0f} "
            f"{r['cpu_us']:7.1f} {r['peak_mib']:9.2f} {r['max_bucket_entries']:6.0f} "
            f"{r['compare_rate']:10,.0f} {r['compare_cpu_us']:7.1f} "
            f"{r['scan_rate']:8,.0f} {r['scan_cpu_us']:7.1f} "
            f"{r['raw_scan_rate']:8,.0f} {r['raw_scan_cpu_us']:7.1f} "
            f"{r['rate'] / r['scan_rate']:7.2f} {r['rate'] / r['raw_scan_rate']:7.2f}"
        )
        if r["divergent"] or r["compare_mismatches"]:
            print(f"  unexpected: divergent={r['divergent']} mismatches={r['compare_mismatches']}")


if __name__ == "__main__":
    main()
