"""Backlog drain benchmark: how fast a snapshot is captured and a backlog is applied.

Prints figures; asserts nothing. Uses SM_KAFKA_BOOTSTRAP / SM_MONGO_URI if set,
else starts the local stack (and stops it afterwards).

    .venv/bin/python benchmarks/drain.py [--docs 50000] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from stream_migrator.app import run_capture, run_transform
from stream_migrator.demo import seed
from stream_migrator.infra import DEFAULT_STATE_DIR, LocalStack
from stream_migrator.mongo import connect
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings, load_settings


def _run_until(
    fn: Callable[[Settings, StopFlag], Any], s: Settings, done: Callable[[Any], bool]
) -> float:
    stop = StopFlag()
    holder: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: holder.update(r=fn(s, stop)), daemon=True)
    started = time.monotonic()
    thread.start()
    while not done(holder):
        time.sleep(0.05)
        if not thread.is_alive():
            raise SystemExit(f"{fn.__name__} exited early")
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(60)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    stack = None
    if not (os.environ.get("SM_KAFKA_BOOTSTRAP") and os.environ.get("SM_MONGO_URI")):
        stack = LocalStack(DEFAULT_STATE_DIR.parent / "bench-stack")
        stack.up()
        os.environ["SM_KAFKA_BOOTSTRAP"] = stack.kafka_bootstrap()
        os.environ["SM_MONGO_URI"] = stack.mongo_uri()
    tag = uuid.uuid4().hex[:8]
    s = load_settings(
        migration=f"bench-{tag}",
        source=f"bench_{tag}.orders",
        target=f"bench_{tag}.orders_v2",
        batch_size=args.batch_size,
    )
    client = connect(s.mongo_uri.get_secret_value(), app="bench")
    try:
        src = client[f"bench_{tag}"]["orders"]
        t0 = time.monotonic()
        seed(src, args.docs, 0, random.Random(1))
        seed_s = time.monotonic() - t0
        checkpoints = client[s.metadata_db]["checkpoints"]

        def snapshot_done(_: Any) -> bool:
            cp = checkpoints.find_one({"_id": f"{s.migration}/capture"}) or {}
            return bool(cp.get("snapshot", {}).get("done"))

        capture_s = _run_until(run_capture, s, snapshot_done)
        tgt = client[f"bench_{tag}"]["orders_v2"]
        last = {"n": 0, "t": 0.0}

        def drained(_: Any) -> bool:
            if time.monotonic() - last["t"] < 0.25:
                return False
            last["t"] = time.monotonic()
            last["n"] = tgt.estimated_document_count()
            return last["n"] >= args.docs

        drain_s = _run_until(run_transform, s, drained)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"documents                 {args.docs}")
        print(f"seed (insert_many)        {args.docs / seed_s:10,.0f} docs/s")
        print(
            f"capture snapshot -> Kafka {args.docs / capture_s:10,.0f} events/s ({capture_s:.1f} s)"
        )
        print(
            f"transform backlog drain   {args.docs / drain_s:10,.0f} events/s ({drain_s:.1f} s, "
            f"batch {args.batch_size}, one worker)"
        )
        print(f"peak RSS (this process)   {rss_mb:10,.0f} MiB")
        client.drop_database(f"bench_{tag}")
    finally:
        client.close()
        if stack is not None:
            stack.down()


if __name__ == "__main__":
    main()
