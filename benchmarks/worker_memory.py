"""Worker memory on a big backlog (issue 11): peak RSS of one `transform` process.

Pre-fills the change topic (6 partitions) with N insert events of about ``--event-bytes``
each (v1 orders with enough items to reach that size, rewriting 2,000 documents over
and over so the stand-in's heap holds a small target), then starts one real
``stream-migrator transform`` process and samples its ``/proc/<pid>/status`` (VmRSS,
VmHWM) until it has applied every event. Prints the backlog in MB, the drain rate and
the peak RSS. What bounds the RSS is the consumer's prefetch (librdkafka's
``queued.max.messages.kbytes`` plus one fetch response in flight, ``fetch.max.bytes``)
and the worker's two batches (the one being written and the one being prepared); see
``stream_migrator.kafka.consumer_config``.

    .venv/bin/python benchmarks/worker_memory.py [--events 200000] [--event-bytes 1000]

Starts (and stops) its own local stack, oplog bounded to 20,000 entries, unless
SM_KAFKA_BOOTSTRAP / SM_MONGO_URI are both set. Prints figures; asserts nothing; exit 1
when the drain does not finish within ``--timeout``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

from drain import REPO, SM_DIR, BenchmarkError, peak_rss_mib, servers

from stream_migrator import events
from stream_migrator.demo.data import v1_order
from stream_migrator.demo.report import scrape
from stream_migrator.infra import free_port
from stream_migrator.kafka import AckedProducer, ensure_topic, producer_config
from stream_migrator.mongo import connect

_PARTITIONS = 6
# The events update this many documents over and over (newer versions each time), so
# the stand-in holds a small target and, with its oplog bounded, a small oplog: the
# backlog is in Kafka, where it is measured, not in the stand-in's heap.
_DOCUMENTS = 2_000
_OPLOG_MAX_ENTRIES = 20_000


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill(bootstrap: str, topic: str, source: str, n: int, event_bytes: int) -> int:
    """Produce ``n`` insert events of about ``event_bytes``; returns the bytes produced."""
    ensure_topic(bootstrap, topic, _PARTITIONS)
    producer = AckedProducer(producer_config(bootstrap, "bench-memory-fill"))
    rng = random.Random(11)
    ids = [v1_order(rng, i)["_id"] for i in range(_DOCUMENTS)]
    total = 0
    for i in range(n):
        doc = {**v1_order(rng, i), "_id": ids[i % _DOCUMENTS]}
        doc["items"] = [
            {"sku": f"SKU-{rng.randint(1, 500):04d}", "qty": rng.randint(1, 5)}
            for _ in range(max(1, event_bytes // 30))
        ]
        event = events.ChangeEvent("insert", source, doc["_id"], doc, (1 << 32) + i, 0)
        value = events.encode(event)
        producer.produce(topic, event.key, value)
        total += len(value)
    producer.barrier()
    producer.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--event-bytes", type=int, default=1_000)
    parser.add_argument("--timeout", type=float, default=1_800.0)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    with servers("bench-memory", oplog_max_entries=_OPLOG_MAX_ENTRIES) as where:
        env = {
            **os.environ,
            "SM_MONGO_URI": where.mongo_uri,
            "SM_KAFKA_BOOTSTRAP": where.kafka_bootstrap,
            "SM_MIGRATION": f"mem-{tag}",
            "SM_SOURCE": f"mem_{tag}.orders",
            "SM_TARGET": f"mem_{tag}.orders_v2",
            "SM_METADATA_DB": f"memmeta_{tag}",
            "SM_PARTITIONS": str(_PARTITIONS),
            "SM_LOG_LEVEL": "warning",
        }
        topic = f"sm.{env['SM_MIGRATION']}.changes"  # Settings.changes_topic
        started = time.monotonic()
        size = fill(where.kafka_bootstrap, topic, env["SM_SOURCE"], args.events, args.event_bytes)
        print(
            f"backlog: {args.events:,} events, {size / 1e6:.0f} MB "
            f"(filled in {time.monotonic() - started:.0f} s)",
            flush=True,
        )
        port = free_port()
        log = SM_DIR / "bench-logs" / f"memory-{tag}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "stream_migrator", "transform"],
                cwd=REPO,
                env={**env, "SM_METRICS_PORT": str(port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            began, applied, peak_rss = time.monotonic(), 0.0, 0.0
            while applied < args.events:
                if worker.poll() is not None:
                    raise BenchmarkError(f"transform exited with {worker.returncode}; see {log}")
                if time.monotonic() - began > args.timeout:
                    raise BenchmarkError(f"not drained in {args.timeout:.0f} s: {applied:,.0f}")
                peak_rss = max(peak_rss, _rss_mib(worker.pid))
                try:
                    metrics = scrape(port)
                except OSError:
                    metrics = {}
                applied = sum(
                    v for k, v in metrics.items() if k.startswith("sm_events_applied_total:")
                ) + metrics.get("sm_events_quarantined_total", 0.0)
                time.sleep(0.2)
            seconds = time.monotonic() - began
            hwm = peak_rss_mib(worker.pid)
        finally:
            worker.terminate()
            worker.wait(60)
        client = connect(where.mongo_uri, app="bench-memory")
        client.drop_database(f"mem_{tag}")
        client.drop_database(f"memmeta_{tag}")
        client.close()
    print(f"drained: {args.events / seconds:,.0f} events/s in {seconds:.0f} s (1 worker)")
    print(
        f"worker_peak_rss_mib={hwm:.0f} sampled_rss_max_mib={peak_rss:.0f} "
        f"backlog_mb={size / 1e6:.0f}"
    )


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
