"""Side by side (issue 11): the servers' ceilings, stream-migrator, Kafka Connect, latency.

Each phase of a round runs on a fresh local stack (Kafka KRaft + mongo-java-server;
``SM_KAFKA_BOOTSTRAP`` / ``SM_MONGO_URI``, when both are set, are used instead unless
``--own-stack``), in this order:

1. ceilings of the stand-in (``insert_many`` of 1,000 v1 orders at a time; a sorted
   ``find()`` by ``_id`` decoded as dicts and as ``RawBSONDocument``; reading the
   change stream of those inserts) and of Kafka (producing 1 KB messages with
   ``acks=all`` and idempotence; consuming them), all from this Python process;
2. stream-migrator's copy with 1 and with 2 workers, the same work as the Connect
   copy, timed the same way: ``benchmarks/drain.py``'s :func:`run_copy` (the real
   ``capture`` and ``transform`` CLI processes, N seeded orders, no live writes; the
   workers started, answering and owning every partition first, as the Connect sink
   connector is; timed from launching capture until the target holds N documents,
   polled every 0.25 s; then a full compare, untimed);
   and its drain with 1 and with 2 workers: :func:`run_drain` (N seeded orders plus
   live writes for ``--live-seconds``, timed from process start until the target
   matches). The drain cannot end before its live writes do, so on small N its rate
   is bounded by N over the live phase (20,000 over 5 s on ``--quick``), and it
   counts the processes' interpreter start; it is reported, not used for the ratios;
3. the Kafka Connect copy of N orders: the MongoDB source connector
   (``connectors/mongo-source.json``, ``copy_existing``) -> topic -> the MongoDB sink
   connector (``connectors/mongo-sink.json`` with the connector's own change-stream
   handler, so it applies the source connector's change events), on a real standalone
   Connect worker, timed from deploying the source connector until the sink collection
   holds N documents (then checked equal to the source, untimed). It copies; it does
   not transform, so it does less work per document than stream-migrator;
4. latency at 1,000 and 2,000 writes/s (``--rates``): capture + 1 worker tail a seeded
   collection while writer processes (one per 1,000/s, 8 paced threads each) insert
   and update at the rate, each write setting a unique ``seq``; a change stream on
   the target (``updateLookup``) records when each write's ``seq`` (or a later one of
   the same document) is visible. Source write (clock read just before the call) to
   visible on target, CLOCK_MONOTONIC in every process: p50 and p99; "in Kafka" is the
   part until capture produced the event (the change topic's CreateTime, read by a
   consumer here). Writers that
   cannot hold 90 % of a rate (a loaded 2-core machine) get that rate's row marked
   NOT HELD, with the figures at the rate they reached, and exit code 1.

CPU per event is utime + stime from ``/proc/<pid>/stat`` of each process: capture and
the transform workers separately (from their /metrics first answering), the Connect
JVM (from deploying the source connector), divided by the events each handled.

It prints one table per round, then the last line

    ratio_vs_connect_1w=X.XX ratio_vs_connect_2w=X.XX ratio_vs_ceiling=X.XX
    capture_us_per_event=N transform_us_per_event=N p99_ms_at_1000=N

(one line; medians over ``--rounds``; the ratios and µs figures come from the copy,
the like-for-like run: ``ratio_vs_ceiling`` = the 1-worker copy rate over the lowest
stand-in ceiling of insert, RawBSON scan and change-stream read). The line before it
gives the same ratios from the drain with live writes (``drain_ratio_*``), and the
one before that the CPU budget of each copy (``benchmarks/cpu_budget.py``): the CPU
every process spent per document copied, the stand-in's and the broker's included
(``all_cpu_us_per_doc_1w`` / ``_2w`` / ``_connect``), and the share of all cores
those processes kept busy (``cores_busy_*``; the copy's rate over ``cores / that
CPU``, the fastest copy the machine allows at that CPU per document). A skipped
phase, or servers not on this machine, prints ``n/a``. A phase that fails or does
not converge within ``--timeout`` stops the run with exit code 1 and a
message; no figure is printed for it.

    .venv/bin/python benchmarks/side_by_side.py [--docs 100000 | --quick] [--rounds 1]
        [--skip-connect] [--skip-latency] [--own-stack]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bson.raw_bson import RawBSONDocument
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from cpu_budget import Budget, CpuMeter, MachineMeter, cpu_seconds
from drain import (
    DRAIN_HEADER,
    SM_DIR,
    BenchmarkError,
    DrainResult,
    Pipeline,
    Servers,
    drain_row,
    run_copy,
    run_drain,
    servers,
)
from pymongo.collection import Collection

from stream_migrator import events
from stream_migrator.demo.data import seed, v1_order
from stream_migrator.errors import InfraError
from stream_migrator.infra.connect import ConnectWorker, render_connector
from stream_migrator.kafka import ensure_topic
from stream_migrator.mongo import connect

STACK = "bench-compare-stack"
CDC_HANDLER = "com.mongodb.kafka.connect.sink.cdc.mongodb.ChangeStreamHandler"
RATES = (1_000, 2_000)
T = TypeVar("T")


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- 1. ceilings ----------------------------------------------------------------------
@dataclass(frozen=True)
class Ceilings:
    insert: float
    scan: float
    scan_raw: float
    change_stream: float
    produce: float
    consume: float

    @property
    def stand_in(self) -> float:
        """The lowest of what the stand-in can deliver (the raw scan: no client decoding)."""
        return min(self.insert, self.scan_raw, self.change_stream)


def _scan(coll: Collection[Any], *, raw: bool) -> float:
    """Documents per second of one sorted pass over ``coll``."""
    if raw:
        coll = coll.with_options(
            codec_options=coll.codec_options.with_options(document_class=RawBSONDocument)
        )
    n, started = 0, time.monotonic()
    for _doc in coll.find({}).sort("_id", 1).batch_size(2_000):
        n += 1
    return n / (time.monotonic() - started)


def measure_ceilings(where: Servers, n: int, timeout_s: float) -> Ceilings:
    """Each ceiling measured twice, the first time on a scratch set (JVMs just started
    run their first requests interpreted: a cold ceiling would flatter every ratio)."""
    warm = min(n, 20_000)
    _stand_in_ceilings(where.mongo_uri, warm, timeout_s)
    insert, scan, scan_raw, change_stream = _stand_in_ceilings(where.mongo_uri, n, timeout_s)
    _kafka_ceilings(where.kafka_bootstrap, warm, timeout_s)
    produce, consume = _kafka_ceilings(where.kafka_bootstrap, n, timeout_s)
    return Ceilings(insert, scan, scan_raw, change_stream, produce, consume)


def _stand_in_ceilings(uri: str, n: int, timeout_s: float) -> tuple[float, float, float, float]:
    """insert_many(1000), dict scan, RawBSON scan and change-stream read of ``n`` orders."""
    client = connect(uri, app="bench-ceilings", timeout_ms=120_000)
    db = client[f"ceil_{uuid.uuid4().hex[:8]}"]
    try:
        coll = db.create_collection("orders")
        rng = random.Random(3)
        docs = [v1_order(rng, i) for i in range(n)]
        with coll.watch(batch_size=1_000) as stream:  # before the inserts: it reads them next
            started = time.monotonic()
            for i in range(0, n, 1_000):
                coll.insert_many(docs[i : i + 1_000])
            insert = n / (time.monotonic() - started)
            got, started = 0, time.monotonic()
            while got < n:
                event = stream.try_next()
                if event is not None and event.get("operationType") == "insert":
                    got += 1
                elif event is None and time.monotonic() - started > timeout_s:
                    raise BenchmarkError(f"the change stream gave {got} of {n} inserts")
            change_stream = n / (time.monotonic() - started)
        return insert, _scan(coll, raw=False), _scan(coll, raw=True), change_stream
    finally:
        client.drop_database(db.name)
        client.close()


def _kafka_ceilings(bootstrap: str, n: int, timeout_s: float) -> tuple[float, float]:
    """Produce ``n`` 1 KB messages (acks=all, idempotent), then consume them; msgs/s each."""
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    partitions = 6
    ensure_topic(bootstrap, topic, partitions)
    try:
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 200_000,
            }
        )
        payloads = [random.Random(i).randbytes(1024) for i in range(64)]  # incompressible
        # One message first, untimed: connecting and the idempotent producer id.
        producer.produce(topic, payloads[0], key=b"warm-up", on_delivery=delivered)
        producer.flush(timeout_s)
        started = time.monotonic()
        for i in range(n):
            while True:
                try:
                    producer.produce(topic, payloads[i % 64], key=b"%d" % i, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 1_000 == 0:
                producer.poll(0)
        if producer.flush(timeout_s) or errors:
            raise BenchmarkError(f"Kafka did not acknowledge every message: {errors[:3]}")
        produce = n / (time.monotonic() - started)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": topic,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            deadline = time.monotonic() + timeout_s
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
            # Timed after the first message (the first fetch's set-up is not throughput);
            # consume() returns as soon as it has the messages asked for.
            got, want, started = 0, 1, 0.0
            while got < n + 1:
                batch = consumer.consume(min(1_000, want - got), timeout=0.5)
                got += sum(1 for msg in batch if msg.error() is None)
                if got and want == 1:
                    want, started = n + 1, time.monotonic()
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"consumed {got} of {n + 1} messages in {timeout_s:.0f} s")
            consume = n / (time.monotonic() - started)
        finally:
            consumer.close()
    finally:
        _delete_topic(bootstrap, topic)
    return produce, consume


def _delete_topic(bootstrap: str, topic: str) -> None:
    """Best effort: a benchmark's topic is not left on shared servers."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for future in admin.delete_topics([topic]).values():
        with contextlib.suppress(Exception):
            future.result(30)


# -- 3. Kafka Connect -----------------------------------------------------------------
@dataclass(frozen=True)
class ConnectResult:
    docs: int
    seconds: float
    cpu_s: float
    budget: Budget | None = None  # the Connect JVM's and the servers' CPU in the timed window

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds

    @property
    def us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.docs


def _jvm_pid(worker: ConnectWorker) -> int:
    # ConnectWorker keeps its process private; its Popen is the JVM itself (no wrapper).
    proc = getattr(worker, "_proc", None)
    if proc is None:
        raise BenchmarkError("the Kafka Connect worker has no process (stream_migrator changed?)")
    return int(proc.pid)


def connect_copy(where: Servers, docs: int, timeout_s: float) -> ConnectResult:
    """Source connector (copy_existing) -> topic -> sink connector: N orders copied."""
    tag = uuid.uuid4().hex[:8]
    client = connect(where.mongo_uri, app="bench-connect", timeout_ms=120_000)
    db = f"connect_{tag}"
    src, tgt = client[db]["orders"], client[db]["orders_copy"]
    topic = f"bench-connect-{tag}.changes"
    state = SM_DIR / f"bench-connect-{tag}"  # kept if the copy fails: connect.log is in it
    worker = ConnectWorker(where.kafka_bootstrap, state)
    try:
        seed(src, docs, 0, random.Random(1))
        ensure_topic(where.kafka_bootstrap, topic, 6)
        worker.start()
        sink = render_connector(
            "mongo-sink",
            NAME=f"sink-{tag}",
            MONGO_URI=where.mongo_uri,
            SINK_TOPIC=topic,
            TARGET_DB=db,
            TARGET_COLLECTION="orders_copy",
        )
        # The records are the source connector's change events, not documents.
        sink["config"]["change.data.capture.handler"] = CDC_HANDLER
        worker.deploy(sink)
        worker.wait_running(sink["name"])
        source = render_connector(
            "mongo-source",
            NAME=f"source-{tag}",
            MONGO_URI=where.mongo_uri,
            SOURCE_DB=db,
            SOURCE_COLLECTION="orders",
            CHANGES_TOPIC=topic,
        )
        pid = _jvm_pid(worker)
        servers_cpu = CpuMeter(where.local_server_pids())
        cpu0, started = cpu_seconds(pid), time.monotonic()
        worker.deploy(source)
        checked = started
        while (count := tgt.estimated_document_count()) < docs:
            time.sleep(0.25)
            now = time.monotonic()
            if now - started > timeout_s:
                raise BenchmarkError(
                    f"the Kafka Connect copy held {count} of {docs} documents after "
                    f"{timeout_s:.0f} s; worker log {worker.log_path}:\n{worker.log_tail(1500)}"
                )
            if now - checked > 2.0:  # a FAILED task would otherwise look like a slow one
                checked = now
                for name in (sink["name"], source["name"]):
                    worker.wait_running(name, timeout=10)
        seconds, cpu_s = time.monotonic() - started, cpu_seconds(pid) - cpu0
        spent = {"Connect": cpu_s, **servers_cpu.spent()}
        budget = Budget(docs, seconds, spent, servers_measured=len(spent) == 3)
        _check_copy(src, tgt)
        worker.stop()
        shutil.rmtree(state, ignore_errors=True)
        return ConnectResult(docs, seconds, cpu_s, budget)
    except InfraError as exc:
        raise BenchmarkError(f"Kafka Connect: {exc}") from exc
    finally:
        worker.stop()
        client.drop_database(db)
        client.close()
        _delete_topic(where.kafka_bootstrap, topic)


def _check_copy(src: Collection[Any], tgt: Collection[Any]) -> None:
    """The copy is a copy: every document equal, in _id order (verification, untimed)."""
    a = src.find({}).sort("_id", 1).batch_size(2_000)
    b = tgt.find({}).sort("_id", 1).batch_size(2_000)
    for n, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            raise BenchmarkError(f"the Kafka Connect copy differs at document {n}: {x} != {y}")
    if src.count_documents({}) != tgt.count_documents({}):
        raise BenchmarkError("the Kafka Connect copy holds a different number of documents")


# -- 4. latency -------------------------------------------------------------------------
@dataclass(frozen=True)
class Latency:
    rate: int
    achieved: float
    writes: int
    p50_ms: float
    p99_ms: float
    # Of which source write -> capture produced it (the Kafka record's CreateTime).
    captured_p50_ms: float | None = None
    captured_p99_ms: float | None = None
    # The share of all cores busy while the writers ran (everything: writers, observers,
    # pipeline, servers): near 1, the tail is the machine's queue, not a stage's.
    machine_busy: float | None = None
    # Of which each kind of process (writers, observers = this process, capture,
    # transform, and the stand-in and Kafka when they run here).
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        """The writers held the rate (90 %); otherwise no latency "at" it is reported."""
        return self.achieved >= 0.9 * self.rate


def _clock() -> float:
    """CLOCK_MONOTONIC: one clock for every process on the machine (writers and observer)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


Write = tuple[Any, int, float]  # document _id, seq, sent at (just before the call)


@dataclass(frozen=True)
class _WriterJob:
    mongo_uri: str
    db: str
    coll: str
    ids: list[Any]  # this process's documents to update (no other process touches them)
    rate: float
    seconds: float
    first_seq: int
    step: int
    threads: int


def _write_thread(
    coll: Collection[Any],
    ids: list[Any],
    *,
    rate: float,
    seconds: float,
    seqs: list[int],
    prepared: threading.Barrier,
    go: Any,
    out: list[Write],
    errors: list[str],
) -> None:
    """Half inserts, half updates of this thread's own ids (so a document's seqs ascend).

    The inserted orders are generated before ``go``: the client's CPU shares the
    machine with the pipeline, so it should spend it on the writes alone.
    """
    rng = random.Random(seqs[0])
    inserts = [v1_order(rng, seq) if rng.random() < 0.5 or not ids else None for seq in seqs]
    try:
        coll.find_one({"_id": ids[0] if ids else None})  # this thread's connection, untimed
    except Exception as exc:  # noqa: BLE001 - reported by the process
        errors.append(repr(exc))
        prepared.wait()  # the process must not hang on its barrier
        return
    prepared.wait()
    go.wait()
    try:
        interval, next_at = 1.0 / rate, _clock()
        until = next_at + seconds
        for seq, doc in zip(seqs, inserts, strict=True):
            if _clock() >= until:
                break
            sent = _clock()
            if doc is not None:
                coll.insert_one(doc)
                ids.append(doc["_id"])
                out.append((doc["_id"], seq, sent))
            else:
                doc_id = rng.choice(ids)
                coll.update_one({"_id": doc_id}, {"$set": {"seq": seq}})
                out.append((doc_id, seq, sent))
            next_at += interval
            time.sleep(max(0.0, next_at - _clock()))
    except Exception as exc:  # noqa: BLE001 - reported by the process
        errors.append(repr(exc))


def _write_process(job: _WriterJob, ready: Any, go: Any, results: Any) -> None:
    """One writer process (own interpreter, own GIL): ``job.threads`` paced threads.

    Puts ``(writes, started, ended, error)`` on ``results``.
    """
    writes: list[list[Write]] = [[] for _ in range(job.threads)]
    errors: list[str] = []
    started = ended = 0.0
    try:
        client = connect(job.mongo_uri, app="bench-writer", timeout_ms=60_000)
        coll = client[job.db][job.coll]
        prepared = threading.Barrier(job.threads + 1, timeout=300)
        per_thread = int(job.rate / job.threads * job.seconds) + 1
        threads = [
            threading.Thread(
                target=_write_thread,
                args=(coll, job.ids[k :: job.threads]),
                kwargs={
                    "rate": job.rate / job.threads,
                    "seconds": job.seconds,
                    "seqs": [
                        job.first_seq + job.step * (k + job.threads * i) for i in range(per_thread)
                    ],
                    "prepared": prepared,
                    "go": go,
                    "out": writes[k],
                    "errors": errors,
                },
                daemon=True,
            )
            for k in range(job.threads)
        ]
        for t in threads:
            t.start()
        prepared.wait()  # every thread generated its orders and holds a connection
        ready.set()
        go.wait()
        started = _clock()
        for t in threads:
            t.join()
        ended = _clock()
        client.close()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.append(repr(exc))
        ready.set()
    results.put(([w for ws in writes for w in ws], started, ended, "; ".join(errors)))


class _Observer(threading.Thread):
    """Tails the target: every document version it shows, with when it was seen."""

    def __init__(self, coll: Collection[Any]) -> None:
        super().__init__(name="observer", daemon=True)
        self._coll = coll
        self.stop = threading.Event()
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self.seen: dict[Any, list[tuple[float, int]]] = {}  # _id -> (seen at, seq), in order
        self.max_seq: dict[Any, int] = {}

    def run(self) -> None:
        try:
            with self._coll.watch(
                full_document="updateLookup", max_await_time_ms=50, batch_size=1_000
            ) as stream:
                self.opened.set()
                while not self.stop.is_set():
                    event = stream.try_next()
                    at = _clock()
                    if event is None:
                        time.sleep(0.005)
                        continue
                    doc = event.get("fullDocument")
                    if doc is not None and "seq" in doc:
                        seq = int(doc["seq"])
                        self.seen.setdefault(doc["_id"], []).append((at, seq))
                        self.max_seq[doc["_id"]] = max(seq, self.max_seq.get(doc["_id"], seq))
        except BaseException as exc:  # noqa: BLE001 - surfaced by latency_at
            self.error = exc
        finally:
            self.opened.set()

    def visible_after(self, write: Write) -> float | None:
        """Seconds from the write to the first target version showing it (or a later one)."""
        doc_id, seq, sent = write
        for at, shown in self.seen.get(doc_id, []):
            if shown >= seq:
                return at - sent
        return None


class _TopicObserver(threading.Thread):
    """Reads the change topic: when capture produced each document version (CreateTime).

    Splits the latency into source write -> in Kafka (capture) and the rest (Kafka,
    the worker, the target write). CreateTime is wall-clock milliseconds; it is put
    on the writers' monotonic clock with one offset taken at start.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="topic-observer", daemon=True)
        self._kafka, self._topic = bootstrap, topic
        self.stop = threading.Event()
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self.produced: dict[Any, list[tuple[float, int]]] = {}  # _id -> (produced at, seq)

    def run(self) -> None:
        try:
            consumer = Consumer(
                {
                    "bootstrap.servers": self._kafka,
                    "group.id": f"bench-topic-observer-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 50,
                }
            )
            meta = consumer.list_topics(self._topic, timeout=30).topics[self._topic]
            parts = []
            for p in meta.partitions:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=30
                )
                parts.append(TopicPartition(self._topic, p, high))
            consumer.assign(parts)
            offset = time.time() - _clock()
            self.opened.set()
            while not self.stop.is_set():
                for msg in consumer.consume(1_000, 0.1):
                    if msg.error() is not None or msg.value() is None:
                        continue
                    event = events.decode(msg.value())
                    doc = event.document
                    if doc is not None and "seq" in doc:
                        at = msg.timestamp()[1] / 1000 - offset
                        self.produced.setdefault(event.doc_id, []).append((at, int(doc["seq"])))
            consumer.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced by latency_at
            self.error = exc
        finally:
            self.opened.set()

    def produced_after(self, write: Write) -> float | None:
        """Seconds from the write to the first event in Kafka showing it (or a later one)."""
        doc_id, seq, sent = write
        for at, shown in self.produced.get(doc_id, []):
            if shown >= seq:
                return at - sent
        return None


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _wait(what: str, cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)


def _process_meter(pipe: Pipeline, writers: list[Any]) -> CpuMeter:
    """CPU of the writer processes, this one (the observers), the pipeline and local servers."""
    return CpuMeter(
        {
            **{f"writers {k}": p.pid for k, p in enumerate(writers) if p.pid is not None},
            "observers": os.getpid(),
            **{f"{p.role} {n}": p.popen.pid for n, p in enumerate(pipe.procs)},
            **pipe.where.local_server_pids(),
        }
    )


def latency_at(pipe: Pipeline, rate: int, seconds: float, timeout_s: float) -> Latency:
    """Writer processes at ``rate`` on the source; each write's time until the target shows it.

    The writers run in their own processes (1 per 1,000 writes/s, 8 threads each) so
    that neither they nor this observer wait on the other's GIL.
    """
    observer = _Observer(pipe.tgt)
    observer.start()
    observer.opened.wait(30)
    in_kafka = _TopicObserver(pipe.where.kafka_bootstrap, f"sm.bench-{pipe.tag}.changes")
    in_kafka.start()
    in_kafka.opened.wait(60)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with client threads
    ready_events, go, results = [], ctx.Event(), ctx.Queue()
    procs = []
    try:
        ids = [d["_id"] for d in pipe.src.find({}, {"_id": 1})]
        count = max(1, -(-rate // 1_000))
        for k in range(count):
            job = _WriterJob(
                pipe.where.mongo_uri,
                pipe.db,
                pipe.src.name,
                ids[k::count],
                rate / count,
                seconds,
                first_seq=1_000_000_000 * (1 + rate) + k,
                step=count,
                threads=8,  # round trips, not CPU, bound a writer: 8 ms each still holds 1,000/s
            )
            ready = ctx.Event()
            ready_events.append(ready)
            procs.append(ctx.Process(target=_write_process, args=(job, ready, go, results)))
        for p in procs:
            p.start()
        for ready in ready_events:
            if not ready.wait(120):
                raise BenchmarkError(f"latency at {rate}/s: a writer process did not start")
        machine, processes, window = MachineMeter(), _process_meter(pipe, procs), time.monotonic()
        go.set()
        outcomes = [results.get(timeout=seconds + timeout_s) for _ in procs]
        busy, shares = machine.busy(), processes.shares(time.monotonic() - window)
        for p in procs:
            p.join(30)
        errors = [o[3] for o in outcomes if o[3]]
        if errors or observer.error is not None:
            raise BenchmarkError(f"latency at {rate}/s: {errors[:1] or [repr(observer.error)]}")
        writes = [w for o in outcomes for w in o[0]]
        achieved = len(writes) / (max(o[2] for o in outcomes) - min(o[1] for o in outcomes))
        last: dict[Any, int] = {}
        for doc_id, seq, _sent in writes:
            last[doc_id] = max(seq, last.get(doc_id, seq))

        def all_visible() -> bool:
            pipe.sample()  # a dead pipeline process raises
            if observer.error is not None:
                raise BenchmarkError(f"the target change stream failed: {observer.error!r}")
            return all(observer.max_seq.get(i, -1) >= s for i, s in last.items())

        _wait(f"the {len(writes)} writes at {rate}/s visible on the target", all_visible, timeout_s)
    finally:
        observer.stop.set()
        observer.join(10)
        in_kafka.stop.set()
        in_kafka.join(10)
        for p in procs:
            if p.is_alive():
                p.kill()
    ms = [1000 * s for w in writes if (s := observer.visible_after(w)) is not None]
    if len(ms) != len(writes):
        raise BenchmarkError(f"latency at {rate}/s: {len(writes) - len(ms)} writes never matched")
    captured = [1000 * s for w in writes if (s := in_kafka.produced_after(w)) is not None]
    return Latency(
        rate,
        achieved,
        len(writes),
        _percentile(ms, 50),
        _percentile(ms, 99),
        _percentile(captured, 50) if captured else None,
        _percentile(captured, 99) if captured else None,
        busy,
        shares,
    )


def measure_latency(
    where: Servers, seed_docs: int, seconds: float, timeout_s: float, rates: list[int]
) -> list[Latency]:
    """Capture + 1 worker caught up on ``seed_docs``, then each of ``rates`` in turn."""
    with Pipeline(where, 1) as pipe:
        seed(pipe.src, seed_docs, 0, random.Random(5))
        pipe.start()

        def caught_up() -> bool:
            s = pipe.sample()
            done = s.ready and sum(s.events[1:]) >= s.events[0] > 0
            return done and pipe.tgt.estimated_document_count() == seed_docs

        _wait(f"the pipeline caught up on {seed_docs} documents", caught_up, timeout_s)
        return [latency_at(pipe, rate, seconds, timeout_s) for rate in rates]


# -- the run ----------------------------------------------------------------------------
@dataclass
class Round:
    ceilings: Ceilings | None = None
    drains: dict[int, DrainResult] = field(default_factory=dict)
    copies: dict[int, DrainResult] = field(default_factory=dict)
    connect: ConnectResult | None = None
    latency: list[Latency] = field(default_factory=list)

    def drain_figures(self) -> dict[str, float | None]:
        """The ratios from the drain with live writes (the older, unlike-for-like figures)."""
        one, two, c = self.drains.get(1), self.drains.get(2), self.connect
        ceil = self.ceilings
        return {
            "drain_ratio_vs_connect_1w": one.docs_per_s / c.docs_per_s if one and c else None,
            "drain_ratio_vs_connect_2w": two.docs_per_s / c.docs_per_s if two and c else None,
            "drain_ratio_vs_ceiling": one.docs_per_s / ceil.stand_in if one and ceil else None,
        }

    def budget_figures(self) -> dict[str, float | None]:
        """Every process's CPU per document copied, and the share of the cores they kept busy."""
        one, two = self.copies.get(1), self.copies.get(2)
        c = self.connect
        budgets = {
            "1w": one.budget if one else None,
            "2w": two.budget if two else None,
            "connect": c.budget if c else None,
        }
        out: dict[str, float | None] = {}
        for name, b in budgets.items():
            out[f"all_cpu_us_per_doc_{name}"] = b.us_per_doc if b else None
            out[f"cores_busy_{name}"] = b.cores_busy if b else None
        return out

    def figures(self) -> dict[str, float | None]:
        one, two = self.copies.get(1), self.copies.get(2)
        c, ceil = self.connect, self.ceilings
        p99 = [lat.p99_ms for lat in self.latency if lat.rate == 1_000 and lat.measured]
        return {
            "ratio_vs_connect_1w": one.docs_per_s / c.docs_per_s if one and c else None,
            "ratio_vs_connect_2w": two.docs_per_s / c.docs_per_s if two and c else None,
            "ratio_vs_ceiling": one.docs_per_s / ceil.stand_in if one and ceil else None,
            "capture_us_per_event": one.capture_us_per_event if one else None,
            "transform_us_per_event": one.transform_us_per_event if one else None,
            "p99_ms_at_1000": p99[0] if p99 else None,
        }


def _row(what: str, rate: str, cpu: str = "", note: str = "") -> str:
    return f"{what:<44} {rate:>12}  {cpu:<42} {note}".rstrip()


def print_round(number: int, r: Round, docs: int, where: str) -> None:
    print(f"\n== round {number}: {docs:,} documents, {where} ==")
    print(_row("what", "events/s", "CPU per event (the process itself)", "notes"))
    if (c := r.ceilings) is not None:
        print(_row("stand-in insert_many(1000)", f"{c.insert:,.0f}"))
        print(_row("stand-in scan by _id, dict", f"{c.scan:,.0f}"))
        print(_row("stand-in scan by _id, RawBSONDocument", f"{c.scan_raw:,.0f}"))
        print(_row("stand-in change-stream read", f"{c.change_stream:,.0f}"))
        print(_row("Kafka produce 1 KB acks=all idempotent", f"{c.produce:,.0f}"))
        print(_row("Kafka consume", f"{c.consume:,.0f}"))
    for kind, runs in (("copy", r.copies), ("drain", r.drains)):
        for w, d in sorted(runs.items()):
            cpu = f"capture {d.capture_us_per_event:.0f} µs, "
            cpu += f"transform {d.transform_us_per_event:.0f} µs"
            what = f"{d.docs:,} + {d.live_writes:,} live" if d.live_writes else f"{d.docs:,}"
            note = f"{what} in {d.seconds:.1f} s, RSS {d.peak_rss_mib:.0f} MiB"
            if kind == "copy":
                note += ", timed as the Connect copy"
            row = f"stream-migrator {kind}, {w} worker{'s' * (w > 1)}"
            print(_row(row, f"{d.docs_per_s:,.0f}", cpu, note))
            if d.budget is not None:
                print(f"  every process's CPU: {d.budget.describe()}")
    if (k := r.connect) is not None:
        print(
            _row(
                "Kafka Connect source -> sink copy",
                f"{k.docs_per_s:,.0f}",
                f"{k.us_per_event:.0f} µs (JVM)",
                f"{k.docs:,} in {k.seconds:.1f} s, copy only",
            )
        )
        if k.budget is not None:
            print(f"  every process's CPU: {k.budget.describe()}")
    for lat in r.latency:
        print(_latency_row(lat))
    if r.drains:
        print("\ndrain detail (benchmarks/drain.py columns):")
        print(DRAIN_HEADER)
        for d in r.drains.values():
            print(drain_row(d))
    sys.stdout.flush()


def _latency_row(lat: Latency) -> str:
    figures = f"p50 {lat.p50_ms:.0f} ms, p99 {lat.p99_ms:.0f} ms"
    if lat.captured_p50_ms is not None and lat.captured_p99_ms is not None:
        figures += f" (in Kafka: p50 {lat.captured_p50_ms:.0f}, p99 {lat.captured_p99_ms:.0f})"
    if lat.machine_busy is not None:
        figures += f", machine {100 * lat.machine_busy:.0f} % busy"
        if lat.shares:
            figures += " (" + ", ".join(f"{k} {100 * v:.0f}" for k, v in lat.shares.items()) + ")"
    if not lat.measured:  # real figures, but at the lower rate the writers reached
        figures = f"NOT HELD; at {lat.achieved:,.0f}/s {figures}"
    return _row(
        f"latency at {lat.rate:,} writes/s",
        f"{lat.achieved:,.0f}",
        figures,
        f"{lat.writes:,} writes (half inserts, half updates), 1 worker",
    )


def final_line(rounds: list[Round], figures: Callable[[Round], dict[str, float | None]]) -> str:
    """``key=median`` over the rounds for each of ``figures``' keys (``n/a`` if one lacks it)."""
    keys = list(figures(Round()))
    parts = []
    for key in keys:
        values = [v for r in rounds if (v := figures(r)[key]) is not None]
        if len(values) < len(rounds):
            parts.append(f"{key}=n/a")
            continue
        median = statistics.median(values)
        exact = "ratio" in key or "busy" in key
        parts.append(f"{key}={median:.2f}" if exact else f"{key}={median:.0f}")
    return " ".join(parts)


def _phase(name: str, own: bool | None, run: Callable[[Servers], T]) -> T:
    _progress(f"-- {name} ...")
    started = time.monotonic()
    try:
        with servers(STACK, own=own) as where:
            result = run(where)
    except BenchmarkError:
        raise
    except Exception as exc:  # a server or client error: name the phase, no figure
        raise BenchmarkError(f"{name}: {exc!r}") from exc
    _progress(f"   {name}: {time.monotonic() - started:.0f} s")
    return result


def run_round(args: argparse.Namespace, r: Round) -> None:
    """Fill ``r`` phase by phase (a failure leaves the phases done so far in it)."""
    own = True if args.own_stack else None
    docs, timeout = args.docs, args.timeout
    if not args.skip_ceilings:
        r.ceilings = _phase("ceilings", own, lambda w: measure_ceilings(w, docs, timeout))
    for workers in args.workers:

        def copy(where: Servers, workers: int = workers) -> DrainResult:
            return run_copy(where, docs, workers, timeout_s=timeout)

        r.copies[workers] = _phase(f"copy, {workers} worker(s)", own, copy)

        def drain(where: Servers, workers: int = workers) -> DrainResult:
            return run_drain(
                where, docs, workers, live_seconds=args.live_seconds, timeout_s=timeout
            )

        r.drains[workers] = _phase(f"drain, {workers} worker(s)", own, drain)
    if not args.skip_connect:
        r.connect = _phase("Kafka Connect copy", own, lambda w: connect_copy(w, docs, timeout))
    if not args.skip_latency:
        r.latency = _phase(
            "latency",
            own,
            lambda w: measure_latency(
                w, args.latency_seed, args.latency_seconds, timeout, args.rates
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=None, help="N (default 100,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 docs, shorter live phases")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="none: no drain")
    parser.add_argument("--live-seconds", type=float, default=None, help="drain's live writes")
    parser.add_argument(
        "--rates", type=int, nargs="+", default=list(RATES), help="writes/s for the latency"
    )
    parser.add_argument("--latency-seconds", type=float, default=None, help="per rate")
    parser.add_argument("--latency-seed", type=int, default=None, help="documents to tail")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per phase, seconds")
    parser.add_argument("--skip-ceilings", action="store_true")
    parser.add_argument("--skip-connect", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--own-stack", action="store_true", help="fresh stacks even if SM_* are set"
    )
    args = parser.parse_args()
    quick = args.quick
    args.docs = args.docs or (20_000 if quick else 100_000)
    args.live_seconds = args.live_seconds if args.live_seconds is not None else (5 if quick else 10)
    args.latency_seconds = args.latency_seconds or (8.0 if quick else 20.0)
    args.latency_seed = args.latency_seed or (2_000 if quick else 10_000)
    rounds: list[Round] = []
    shared = os.environ.get("SM_MONGO_URI") and os.environ.get("SM_KAFKA_BOOTSTRAP")
    where = "a fresh local stack per phase"
    if shared and not args.own_stack:
        where = "on the SM_MONGO_URI / SM_KAFKA_BOOTSTRAP servers"  # not the URI: secrets
    for number in range(1, args.rounds + 1):
        rounds.append(Round())
        try:
            run_round(args, rounds[-1])
        except BenchmarkError as exc:
            print_round(number, rounds[-1], args.docs, where)  # the phases that did finish
            sys.exit(f"FAILED (round {number}, no summary line): {exc}")
        print_round(number, rounds[-1], args.docs, where)
    short = [lat for r in rounds for lat in r.latency if not lat.measured]
    print(final_line(rounds, Round.budget_figures))
    print(final_line(rounds, Round.drain_figures))
    print(final_line(rounds, Round.figures), flush=True)
    if short:
        sys.exit(
            "FAILED: the writers could not hold "
            + ", ".join(f"{lat.rate:,}/s (reached {lat.achieved:,.0f}/s)" for lat in short)
            + " on this machine; no latency is reported at those rates"
        )


if __name__ == "__main__":
    main()
