"""Snapshot benchmark: one collection copied into Kafka by 1 range, then by several at once.

For each ``--parallelism`` value: seeds N v1 orders with mixed-type ``_id``s (ints,
strings and ObjectIds, a third each) into a fresh collection, starts the real
``capture`` CLI with ``SM_SNAPSHOT_PARALLELISM`` set (no transform worker, and the
lag fence off: only the snapshot's own speed is measured), and times from its
first ``/metrics`` answer to every document captured (acknowledged by Kafka and
checkpointed). The rate is over the copy alone: from capture saving its stream
position (just before the snapshot's first read) to the snapshot marked done, as
seen by polling the checkpoint every 20 ms. Prints events/s into Kafka and
capture's CPU per event, and checks that the topic holds exactly N events (each
document once). The rounds run in the
order given, then again in reverse, so a JVM warming up favours neither side.

    .venv/bin/python benchmarks/snapshot.py [--docs 20000] [--parallelism 1 4]

Uses SM_KAFKA_BOOTSTRAP / SM_MONGO_URI if set, else starts (and stops) one local stack.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from drain import BenchmarkError, Pipeline, Servers, servers
from pymongo import InsertOne

from stream_migrator.demo.data import v1_order


@dataclass(frozen=True)
class SnapshotResult:
    parallelism: int
    docs: int
    seconds: float  # first /metrics answer -> every document captured
    snapshot_seconds: float  # stream position saved -> snapshot done (the copy alone)
    events_in_topic: int
    cpu_s: float

    @property
    def events_per_s(self) -> float:
        return self.docs / self.snapshot_seconds

    @property
    def us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.docs


def mixed_id(i: int) -> Any:
    """A third ints, a third strings, a third ObjectIds (the order they are inserted in)."""
    kind = i % 3
    if kind == 0:
        return i
    if kind == 1:
        return f"order-{i:08}"
    return None  # keep v1_order's ObjectId


def seed_mixed(pipe: Pipeline, n: int) -> None:
    rng = random.Random(1)
    batch: list[InsertOne[dict[str, Any]]] = []
    for i in range(n):
        doc = v1_order(rng, i)
        forced = mixed_id(i)
        if forced is not None:
            doc["_id"] = forced
        batch.append(InsertOne(doc))
        if len(batch) == 2_000:
            pipe.src.bulk_write(batch, ordered=False)
            batch = []
    if batch:
        pipe.src.bulk_write(batch, ordered=False)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set SM_* variables for the capture process Pipeline.start launches."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def topic_events(bootstrap: str, topic: str) -> int:
    """Events in ``topic``: the sum of its partitions' high watermarks (nothing was deleted)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-snapshot-count"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def run_snapshot(where: Servers, docs: int, parallelism: int, timeout_s: float) -> SnapshotResult:
    """Seed, start capture alone, time until every document is captured."""
    with Pipeline(where, 0) as pipe:
        seed_mixed(pipe, docs)
        with _env(SM_SNAPSHOT_PARALLELISM=str(parallelism), SM_SNAPSHOT_MAX_LAG="0"):
            pipe.start()
        deadline = time.monotonic() + timeout_s
        started: float | None = None
        checkpoints = pipe.client[pipe.metadata_db]["checkpoints"]
        positioned: float | None = None
        copied_at: float | None = None
        while True:
            time.sleep(0.02)
            now = time.monotonic()
            # Capture saves its stream position just before the snapshot's first read
            # and marks the snapshot done after its last barrier: the copy is in between.
            state = checkpoints.find_one({}, {"snapshot.done": 1})
            if state is not None and positioned is None:
                positioned = now
            if state is not None and copied_at is None and state["snapshot"]["done"]:
                copied_at = now
            if now > deadline:
                raise BenchmarkError(
                    f"the snapshot of {docs} documents by {parallelism} ranges did not finish "
                    f"in {timeout_s:.0f} s; logs in {pipe.log_dir}/{pipe.tag}-*.log"
                )
            sample = pipe.sample()
            if not sample.ready:
                continue
            if started is None:
                started = now
            if sample.events[0] >= docs and copied_at is not None:
                break
        topic = f"sm.bench-{pipe.tag}.changes"
        return SnapshotResult(
            parallelism=parallelism,
            docs=docs,
            seconds=now - started,
            snapshot_seconds=copied_at - (positioned or copied_at),
            events_in_topic=topic_events(where.kafka_bootstrap, topic),
            cpu_s=sample.cpu_s[0],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    order = [*args.parallelism, *reversed(args.parallelism)]
    results: list[SnapshotResult] = []
    with servers("bench-snapshot-stack") as where:
        for p in order:
            r = run_snapshot(where, args.docs, p, args.timeout)
            results.append(r)
            ok = "ok" if r.events_in_topic == r.docs else f"MISMATCH ({r.events_in_topic} events)"
            print(
                f"ranges={r.parallelism:<2} docs={r.docs} snapshot_s={r.snapshot_seconds:6.2f} "
                f"events/s={r.events_per_s:8.0f} process_s={r.seconds:6.2f} "
                f"capture_us_per_event={r.us_per_event:5.0f} "
                f"topic={ok}",
                flush=True,
            )
    best = {p: max(r.events_per_s for r in results if r.parallelism == p) for p in args.parallelism}
    base = best[args.parallelism[0]]
    print(" ".join(f"ranges_{p}={v:.0f}/s ({v / base:.2f}x)" for p, v in best.items()))
    return 0 if all(r.events_in_topic == r.docs for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
