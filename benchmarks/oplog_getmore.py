"""Server CPU of change-stream getMores on the stand-in, by oplog size and oplog implementation.

For each implementation (``library``: mongo-java-server's CollectionBackedOplog;
``bounded``: the launcher's time-indexed BoundedOplog) and each oplog size, starts
a MongoDB-only LocalStack of its own, fills the oplog with N inserts, opens a change
stream at the end of it and measures the JVM's CPU time (utime + stime from
/proc/<pid>/stat) over:

- empty getMores (an idle capture's poll), and
- getMores that return update events with ``fullDocument: updateLookup`` (the
  library looks the document up by scanning the whole collection per event).

With ``--idle-capture SECONDS`` (needs SM_KAFKA_BOOTSTRAP: a running Kafka) it also
runs a real ``stream-migrator capture`` on an empty collection of that server and
reports the server's CPU while the capture sits idle, in cores.

Prints figures; asserts nothing.

    .venv/bin/python benchmarks/oplog_getmore.py [--sizes 0 200000] [--polls 40] [--updates 200]
        [--idle-capture 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bson import Timestamp
from pymongo import MongoClient

from stream_migrator.infra import LocalStack, free_port

REPO = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _idle_capture_cores(uri: str, pid: int, seconds: float) -> float:
    """Server CPU (in cores) while a real capture tails an empty collection for ``seconds``."""
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "SM_MONGO_URI": uri,
        "SM_MIGRATION": f"bench-idle-{tag}",
        "SM_SOURCE": f"benchidle_{tag}.orders",
        "SM_TARGET": f"benchidle_{tag}.orders_v2",
        "SM_METADATA_DB": f"benchmeta_{tag}",
        "SM_METRICS_PORT": str(free_port()),
    }
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    checkpoints = client[env["SM_METADATA_DB"]]["checkpoints"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_migrator", "capture"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (checkpoints.find_one({"snapshot.done": True})):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"capture did not reach its stream (exit {proc.poll()})")
            time.sleep(0.5)
        time.sleep(2)  # past the stream's opening
        before, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        return (_cpu_seconds(pid) - before) / (time.monotonic() - t0)
    finally:
        proc.terminate()
        proc.wait(60)
        client.close()


def _measure(impl: str, size: int, polls: int, updates: int, idle_s: float) -> dict[str, float]:
    state = REPO / ".sm" / f"bench-oplog-{uuid.uuid4().hex[:8]}"
    stack = LocalStack(state, oplog_impl=impl)
    try:
        stack.up(quiet=True, only=frozenset({"mongo"}))
        pid = stack.servers()["mongo"].pid
        client: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_uri())
        coll = client.bench.docs
        for start in range(0, size, 10_000):
            coll.insert_many([{"_id": i, "n": i} for i in range(start, min(size, start + 10_000))])
        begin = int(time.time()) + 1  # after every fill entry: the stream sees only what follows
        stream = coll.watch(
            full_document="updateLookup", start_at_operation_time=Timestamp(begin, 0)
        )
        stream.try_next()  # the first getMore warms the cursor up
        before = _cpu_seconds(pid)
        for _ in range(polls):
            assert stream.try_next() is None
        empty_ms = (_cpu_seconds(pid) - before) * 1000 / polls
        time.sleep(max(0.0, begin + 0.05 - time.time()))  # updates inside the stream's window
        for i in range(updates):
            coll.update_one({"_id": i % max(size, 1)}, {"$set": {"n": -i - 1}}, upsert=True)
        before = _cpu_seconds(pid)
        seen = 0
        deadline = time.monotonic() + 120
        while seen < updates and time.monotonic() < deadline:
            if stream.try_next() is not None:
                seen += 1
        update_ms = (_cpu_seconds(pid) - before) * 1000 / max(seen, 1)
        stream.close()
        client.close()
        idle = _idle_capture_cores(stack.mongo_uri(), pid, idle_s) if idle_s else float("nan")
        return {
            "empty_getmore_ms": empty_ms,
            "update_event_ms": update_ms,
            "events": seen,
            "idle_capture_cores": idle,
        }
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 200_000])
    parser.add_argument("--impls", nargs="+", default=["library", "bounded"])
    parser.add_argument("--polls", type=int, default=40)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--idle-capture", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    if args.idle_capture and not os.environ.get("SM_KAFKA_BOOTSTRAP"):
        parser.error("--idle-capture needs SM_KAFKA_BOOTSTRAP (a running Kafka broker)")
    print(
        f"{'oplog':>8} {'entries':>8} {'empty getMore':>15} {'update event':>14}"
        f" {'idle capture':>14}"
    )
    for size in args.sizes:
        for impl in args.impls:
            r = _measure(impl, size, args.polls, args.updates, args.idle_capture)
            print(
                f"{impl:>8} {size:>8} {r['empty_getmore_ms']:>12.2f} ms"
                f" {r['update_event_ms']:>11.2f} ms {r['idle_capture_cores']:>8.2f} cores"
                f"  ({r['events']:.0f} events)",
                flush=True,
            )


if __name__ == "__main__":
    main()
