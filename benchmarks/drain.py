"""Throughput benchmark: snapshot + live stream drained by 1 and by 2 transform workers.

For each worker count: seeds N v1 orders into a fresh collection, starts `capture`
and W `transform` processes (the real CLI), writes live changes for a while, and
times until the target matches the source (full compare). Prints documents per
second and each worker's peak RSS (VmHWM). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/drain.py [--docs 200000] [--workers 1 2] [--live-seconds 10]

Uses SM_KAFKA_BOOTSTRAP / SM_MONGO_URI if set, else starts (and stops) a local stack.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from stream_migrator.demo import LiveWriter, seed
from stream_migrator.infra import DEFAULT_STATE_DIR, LocalStack
from stream_migrator.mongo import connect
from stream_migrator.reconcile import full_compare
from stream_migrator.spec import get_spec

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_once(docs: int, workers: int, live_seconds: float, log_dir: Path) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    db = f"bench_{tag}"
    env = {
        **os.environ,
        "SM_MIGRATION": f"bench-{tag}",
        "SM_SOURCE": f"{db}.orders",
        "SM_TARGET": f"{db}.orders_v2",
        "SM_PARTITIONS": "6",
        "SM_LOG_LEVEL": "warning",
    }
    client = connect(os.environ["SM_MONGO_URI"], app="bench", timeout_ms=120_000)
    src, tgt = client[db]["orders"], client[db]["orders_v2"]
    t0 = time.monotonic()
    seed(src, docs, 0, random.Random(1))
    seed_s = time.monotonic() - t0
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    roles = ["capture"] + ["transform"] * workers
    for i, role in enumerate(roles):
        with (log_dir / f"{tag}-{role}-{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "stream_migrator", role],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    writer = LiveWriter(src, live_seconds, 200)
    writer.start()
    spec = get_spec("orders.v1_to_v2")
    peaks = [0.0] * workers
    while True:
        time.sleep(1.0)
        for k, proc in enumerate(procs[1:]):
            peaks[k] = max(peaks[k], _peak_rss_mib(proc.pid))
        count = tgt.estimated_document_count()
        if os.environ.get("BENCH_VERBOSE"):
            print(f"  [{time.monotonic() - started:5.1f}s] target {count}", flush=True)
        if writer.is_alive() or count < docs * 0.95:
            continue
        if full_compare(src, tgt, spec).mismatches == 0:
            break
    elapsed = time.monotonic() - started
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)
    client.drop_database(db)
    client.close()
    return {
        "seed_docs_per_s": docs / seed_s,
        "seconds": elapsed,
        "docs_per_s": (docs + writer.writes) / elapsed,
        "live_writes": writer.writes,
        "peak_rss_mib": max(peaks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--live-seconds", type=float, default=10.0)
    args = parser.parse_args()
    # A fresh local stack per round: mongo-java-server keeps its whole oplog in memory,
    # so a second 200,000-document round on the same server runs out of heap.
    own_stack = not (os.environ.get("SM_KAFKA_BOOTSTRAP") and os.environ.get("SM_MONGO_URI"))
    log_dir = DEFAULT_STATE_DIR.parent / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    header = ("workers", "docs", "live", "seconds", "docs/s", "peak RSS/worker")
    print("{:>7} {:>8} {:>6} {:>8} {:>8} {:>16}".format(*header))
    for workers in args.workers:
        stack = LocalStack(DEFAULT_STATE_DIR.parent / "bench-stack") if own_stack else None
        if stack is not None:
            stack.down()
            stack.up(quiet=True)
            os.environ["SM_KAFKA_BOOTSTRAP"] = stack.kafka_bootstrap()
            os.environ["SM_MONGO_URI"] = stack.mongo_uri()
        try:
            r = run_once(args.docs, workers, args.live_seconds, log_dir)
        finally:
            if stack is not None:
                stack.down()
        print(
            f"{workers:>7} {args.docs:>8} {int(r['live_writes']):>6} {r['seconds']:>8.1f} "
            f"{r['docs_per_s']:>8,.0f} {r['peak_rss_mib']:>13.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
