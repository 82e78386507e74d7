"""Throughput benchmark: snapshot + live stream drained by 1 and by 2 transform workers.

For each worker count: seeds N v1 orders into a fresh collection, starts `capture`
and W `transform` processes (the real CLI), writes live changes for a while, and
times until the target matches the source. Prints documents per second, each
process's CPU per event (utime + stime from /proc, less its start-up) and each
worker's peak RSS (VmHWM). Prints figures; asserts nothing, but fails (exit 1)
when a drain does not converge within ``--timeout``.

    .venv/bin/python benchmarks/drain.py [--docs 200000] [--workers 1 2] [--live-seconds 10]

Uses SM_KAFKA_BOOTSTRAP / SM_MONGO_URI if set, else starts (and stops) a local stack
per round. ``benchmarks/side_by_side.py`` runs the same drain (this module's
:func:`run_drain`) next to the servers' ceilings and Kafka Connect.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cpu_budget import Budget, CpuMeter, cpu_seconds, server_pids
from prometheus_client.parser import text_string_to_metric_families
from pymongo.errors import PyMongoError

from stream_migrator.demo.data import LiveWriter, seed
from stream_migrator.demo.report import scrape
from stream_migrator.errors import InfraError
from stream_migrator.infra import DEFAULT_STATE_DIR, LocalStack, free_port
from stream_migrator.kafka import ensure_topic
from stream_migrator.kafka_retention import topic_retention
from stream_migrator.mongo import connect
from stream_migrator.reconcile import full_compare
from stream_migrator.settings import load_settings
from stream_migrator.spec import get_spec

REPO = Path(__file__).resolve().parents[1]
SM_DIR = DEFAULT_STATE_DIR.parent
PARTITIONS = 6  # of the change topic: 2 workers get 3 each


class BenchmarkError(RuntimeError):
    """A phase failed or did not converge: the benchmark stops without printing a figure."""


@dataclass(frozen=True)
class Servers:
    """Where one round runs."""

    mongo_uri: str
    kafka_bootstrap: str

    def local_server_pids(self) -> dict[str, int]:
        """The stand-in's and the broker's pids, when they run on this machine."""
        return server_pids(self.mongo_uri, self.kafka_bootstrap)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def servers(
    name: str, *, own: bool | None = None, oplog_max_entries: int | None = None
) -> Iterator[Servers]:
    """The round's servers: SM_MONGO_URI / SM_KAFKA_BOOTSTRAP, else a fresh local stack.

    A fresh stack per round because mongo-java-server keeps its oplog in memory and a
    JVM that served one phase is warmer (and fuller) than the next phase's would be.
    ``own=True`` starts one even when the variables are set; ``oplog_max_entries``
    bounds the stand-in's oplog of a stack started here.
    """
    env_uri, env_kafka = os.environ.get("SM_MONGO_URI"), os.environ.get("SM_KAFKA_BOOTSTRAP")
    if own is None:
        own = not (env_uri and env_kafka)
    if not own:
        if not (env_uri and env_kafka):
            raise BenchmarkError("set both SM_MONGO_URI and SM_KAFKA_BOOTSTRAP, or neither")
        yield Servers(env_uri, env_kafka)
        return
    stack = LocalStack(SM_DIR / name, oplog_max_entries=oplog_max_entries)
    stack.down()
    stack.up(quiet=True)
    try:
        yield Servers(stack.mongo_uri(), stack.kafka_bootstrap())
    finally:
        stack.down()


@dataclass(frozen=True)
class DrainResult:
    workers: int
    docs: int
    live_writes: int
    seconds: float
    capture_events: int
    transform_events: int
    capture_cpu_s: float
    transform_cpu_s: float  # all workers together
    peak_rss_mib: float  # the largest worker's
    budget: Budget | None = None  # every process's CPU in the timed window (the copy only)

    @property
    def docs_per_s(self) -> float:
        """Seeded documents plus live writes, over the time from process start to converged."""
        return (self.docs + self.live_writes) / self.seconds

    @property
    def capture_us_per_event(self) -> float:
        return 1e6 * self.capture_cpu_s / max(1, self.capture_events)

    @property
    def transform_us_per_event(self) -> float:
        return 1e6 * self.transform_cpu_s / max(1, self.transform_events)


@dataclass
class PipelineProcess:
    """One CLI process of a running pipeline."""

    role: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    cpu_at_start: float | None = None  # once its /metrics answers: interpreter and imports done

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchmarkError(
                f"the {self.role} process exited with code {self.popen.returncode}; see {self.log}"
            )

    def metrics(self) -> dict[str, float] | None:
        try:
            return scrape(self.port)
        except OSError:
            return None

    def owned_partitions(self) -> set[int]:
        """The change topic's partitions this worker reports lag for (its assignment, as
        of its last lag report, every 2 s); empty while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return set()
        return {
            int(sample.labels["partition"])
            for family in text_string_to_metric_families(text)
            if family.name == "sm_consumer_partition_lag_events"
            for sample in family.samples
        }

    def events(self, metrics: dict[str, float]) -> float:
        """Events handled: captured and acknowledged, or consumed and settled."""
        if self.role == "capture":
            return metrics.get("sm_events_captured_total", 0.0)
        applied = sum(v for k, v in metrics.items() if k.startswith("sm_events_applied_total:"))
        return applied + metrics.get("sm_events_quarantined_total", 0.0)


@dataclass(frozen=True)
class Sample:
    """One poll of every process: events handled and CPU seconds since its start-up."""

    ready: bool  # every /metrics answered
    events: list[float]
    cpu_s: list[float]
    peak_rss_mib: float  # the largest worker's so far


class Pipeline:
    """``capture`` and W ``transform`` processes (the real CLI) on a fresh pair of collections."""

    def __init__(self, where: Servers, workers: int, log_dir: Path | None = None) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.db = f"bench_{self.tag}"
        self.metadata_db = f"benchmeta_{self.tag}"
        self.log_dir = log_dir or SM_DIR / "bench-logs"
        self.where = where
        self.workers = workers
        self.client = connect(where.mongo_uri, app="bench", timeout_ms=120_000)
        self.src = self.client[self.db]["orders"]
        self.tgt = self.client[self.db]["orders_v2"]
        self.procs: list[PipelineProcess] = []
        self._peak = 0.0

    def start(self, *, capture: bool = True, workers: bool = True) -> None:
        """Start the processes (both kinds by default; one kind for a staged start)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SM_MONGO_URI": self.where.mongo_uri,
            "SM_KAFKA_BOOTSTRAP": self.where.kafka_bootstrap,
            "SM_MIGRATION": f"bench-{self.tag}",
            "SM_SOURCE": f"{self.db}.orders",
            "SM_TARGET": f"{self.db}.orders_v2",
            "SM_METADATA_DB": self.metadata_db,
            "SM_PARTITIONS": str(PARTITIONS),
            "SM_LOG_LEVEL": "warning",
        }
        if not self.procs:
            _create_topics(env)
        roles = (["capture"] if capture else []) + (["transform"] * self.workers if workers else [])
        for role in roles:
            port = free_port()
            log = self.log_dir / f"{self.tag}-{role}-{len(self.procs)}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [sys.executable, "-m", "stream_migrator", role],
                    cwd=REPO,
                    env={**env, "SM_METRICS_PORT": str(port)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            # Capture first, then the workers: Sample.events[0] is capture's.
            at = 0 if role == "capture" else len(self.procs)
            self.procs.insert(at, PipelineProcess(role, popen, port, log))

    def sample(self) -> Sample:
        """Poll every process; a dead one raises. The first answer of /metrics sets its
        CPU baseline, so call this often (0.1 s) until ``ready``."""
        events, cpu, ready = [], [], True
        for p in self.procs:
            p.check_alive()
            m = p.metrics()
            c = cpu_seconds(p.popen.pid)
            if m is None:
                ready = False
            elif p.cpu_at_start is None:
                p.cpu_at_start = c
            events.append(p.events(m or {}))
            cpu.append(c - (p.cpu_at_start if p.cpu_at_start is not None else c))
        rss = [peak_rss_mib(p.popen.pid) for p in self.procs if p.role == "transform"]
        self._peak = max([self._peak, *rss])
        return Sample(ready, events, cpu, self._peak)

    def assigned(self) -> bool:
        """Every partition owned by a worker, and every worker owning at least one."""
        owned = [p.owned_partitions() for p in self.procs if p.role == "transform"]
        every = set().union(*owned) == set(range(PARTITIONS))
        return bool(owned) and every and all(owned)

    def stop(self) -> None:
        stop_all([p.popen for p in self.procs])

    def close(self) -> None:
        """Stop the processes and drop both databases."""
        try:
            self.stop()
        finally:
            # Best effort: a server that died must not hide the error that stopped the run.
            with contextlib.suppress(PyMongoError):
                self.client.drop_database(self.db)
                self.client.drop_database(self.metadata_db)
            self.client.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_topics(env: dict[str, str], timeout: float = 30.0) -> None:
    """Create the pipeline's topics and wait until the broker describes them.

    Workaround: on a broker started seconds ago, a topic just created can still be
    unknown to describe_configs, and a worker started then exits with "cannot read
    the configuration of Kafka topic" (its tombstone-retention check at start-up).
    """
    s = load_settings(**{k[3:].lower(): v for k, v in env.items() if k in _TOPIC_SETTINGS})
    ensure_topic(s.kafka_bootstrap, s.changes_topic, s.partitions)
    ensure_topic(s.kafka_bootstrap, s.quarantine_topic, 1)
    deadline = time.monotonic() + timeout
    for topic in (s.changes_topic, s.quarantine_topic):
        while True:
            try:
                topic_retention(s.kafka_bootstrap, topic, timeout=5)
                break
            except InfraError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


_TOPIC_SETTINGS = ("SM_KAFKA_BOOTSTRAP", "SM_MONGO_URI", "SM_MIGRATION", "SM_PARTITIONS")


def run_drain(
    where: Servers,
    docs: int,
    workers: int,
    *,
    live_seconds: float = 10.0,
    live_rate: int = 200,
    timeout_s: float = 1800.0,
    log_dir: Path | None = None,
    verbose: bool = False,
) -> DrainResult:
    """Seed, start capture + ``workers`` transforms, live-write, time until converged.

    Converged: the live writer is done, capture's count stopped moving, the workers
    settled every captured event, both collections hold as many documents, and then
    a full compare finds no mismatch. The time is taken at the poll that saw it
    (before the compare, which is verification, not drain); a failed compare keeps
    waiting. CPU per event is each process's utime + stime from the moment its
    /metrics first answered (start-up excluded) to that poll.
    """
    with Pipeline(where, workers, log_dir) as pipe:
        src, tgt = pipe.src, pipe.tgt
        seed(src, docs, 0, random.Random(1))
        started = time.monotonic()
        pipe.start()
        writer = LiveWriter(src, live_seconds, live_rate)
        writer.start()
        spec = get_spec("orders.v1_to_v2")
        last_captured = -1.0
        deadline = started + timeout_s
        ready = False
        while True:
            time.sleep(0.5 if ready else 0.1)
            now = time.monotonic()
            if now > deadline:
                raise BenchmarkError(
                    f"the {workers}-worker drain of {docs} documents did not converge in "
                    f"{timeout_s:.0f} s (target {tgt.estimated_document_count()}, source "
                    f"{src.estimated_document_count()} documents; events captured / settled "
                    f"by the workers, from /metrics: {pipe.sample().events}); "
                    f"logs in {pipe.log_dir}/{pipe.tag}-*.log"
                )
            if writer.error is not None:
                raise BenchmarkError(f"the live writer failed: {writer.error!r}")
            sample = pipe.sample()
            ready = sample.ready
            if not ready or writer.is_alive():
                continue
            captured, settled = sample.events[0], sum(sample.events[1:])
            count = tgt.estimated_document_count()
            if verbose:
                print(
                    f"  [{now - started:6.1f}s] captured {captured:.0f} settled {settled:.0f} "
                    f"target {count}",
                    flush=True,
                )
            moved, last_captured = captured != last_captured, captured
            if moved or settled < captured or count != src.estimated_document_count():
                continue
            if full_compare(src, tgt, spec).mismatches == 0:
                break
        return DrainResult(
            workers=workers,
            docs=docs,
            live_writes=writer.writes,
            seconds=now - started,
            capture_events=int(captured),
            transform_events=int(settled),
            capture_cpu_s=sample.cpu_s[0],
            transform_cpu_s=sum(sample.cpu_s[1:]),
            peak_rss_mib=sample.peak_rss_mib,
        )


def run_copy(
    where: Servers,
    docs: int,
    workers: int,
    *,
    timeout_s: float = 1800.0,
    log_dir: Path | None = None,
) -> DrainResult:
    """The same work as the Kafka Connect copy, timed the same way.

    N seeded documents and no live writes; the workers are started, answering and
    owning every partition first (as the Connect sink connector is running before
    its source is deployed), then the clock starts as capture is launched and stops at the first
    poll (every 0.25 s, as the Connect copy's) where the target holds N documents
    and the workers settled every captured event. A full compare then verifies the
    copy, untimed. CPU per event as in :func:`run_drain`.
    """
    with Pipeline(where, workers, log_dir) as pipe:
        src, tgt = pipe.src, pipe.tgt
        seed(src, docs, 0, random.Random(1))
        pipe.start(capture=False)
        deadline = time.monotonic() + timeout_s
        # Started = every worker answers and the group has handed out every partition,
        # each worker some: a copy timed from there pays no join or rebalance, as the
        # Connect copy's sink task is running before its source is deployed.
        while not (pipe.sample().ready and pipe.assigned()):
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"the {workers} worker(s) did not start and share the {PARTITIONS} "
                    f"partitions; see {pipe.log_dir}"
                )
            time.sleep(0.1)
        servers_cpu = CpuMeter(where.local_server_pids())
        workers_cpu = CpuMeter({f"transform {n}": p.popen.pid for n, p in enumerate(pipe.procs)})
        started = time.monotonic()
        pipe.start(workers=False)
        capture_cpu = CpuMeter({"capture": pipe.procs[0].popen.pid})  # from its launch
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            sample = pipe.sample()
            captured, settled = sample.events[0], sum(sample.events[1:])
            if (
                sample.ready
                and settled >= captured >= docs
                and (tgt.estimated_document_count() >= docs)
            ):
                break
            if now > deadline:
                raise BenchmarkError(
                    f"the {workers}-worker copy of {docs} documents did not finish in "
                    f"{timeout_s:.0f} s (captured {captured:.0f}, settled {settled:.0f}, target "
                    f"{tgt.estimated_document_count()}); logs in {pipe.log_dir}/{pipe.tag}-*.log"
                )
        seconds = now - started
        spent = {**capture_cpu.spent(), **workers_cpu.spent(), **servers_cpu.spent()}
        measured = len(spent) == 3 + workers
        if full_compare(src, tgt, get_spec("orders.v1_to_v2")).mismatches:
            raise BenchmarkError(f"the {workers}-worker copy differs from its source")
        return DrainResult(
            workers=workers,
            docs=docs,
            live_writes=0,
            seconds=seconds,
            capture_events=int(captured),
            transform_events=int(settled),
            capture_cpu_s=sample.cpu_s[0],
            transform_cpu_s=sum(sample.cpu_s[1:]),
            peak_rss_mib=sample.peak_rss_mib,
            budget=Budget(docs, seconds, _summed_workers(spent), servers_measured=measured),
        )


def _summed_workers(spent: dict[str, float]) -> dict[str, float]:
    """One "transform" entry for all workers, in the order capture, transform, servers."""
    workers = sum(v for k, v in spent.items() if k.startswith("transform "))
    rest = {k: v for k, v in spent.items() if not k.startswith("transform ")}
    return {"capture": rest.pop("capture"), "transform": workers, **rest}


def stop_all(popens: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    """SIGTERM every process (they drain and commit), then SIGKILL what outlives ``timeout``."""
    for p in popens:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in popens:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


DRAIN_HEADER = "{:>7} {:>8} {:>6} {:>8} {:>8} {:>11} {:>13} {:>16}".format(
    "workers", "docs", "live", "seconds", "docs/s", "capture µs", "transform µs", "peak RSS/worker"
)


def drain_row(r: DrainResult) -> str:
    """One line under :data:`DRAIN_HEADER` (µs: CPU per event; transform: all workers)."""
    rss = "-" if math.isnan(r.peak_rss_mib) else f"{r.peak_rss_mib:.0f} MiB"
    return (
        f"{r.workers:>7} {r.docs:>8} {r.live_writes:>6} {r.seconds:>8.1f} {r.docs_per_s:>8,.0f} "
        f"{r.capture_us_per_event:>11.0f} {r.transform_us_per_event:>13.0f} {rss:>16}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--live-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per drain, seconds")
    parser.add_argument("--verbose", action="store_true", help="print progress each poll")
    args = parser.parse_args()
    print(DRAIN_HEADER)
    try:
        for workers in args.workers:
            with servers("bench-stack") as where:
                r = run_drain(
                    where,
                    args.docs,
                    workers,
                    live_seconds=args.live_seconds,
                    timeout_s=args.timeout,
                    verbose=args.verbose or bool(os.environ.get("BENCH_VERBOSE")),
                )
            print(drain_row(r), flush=True)
    except BenchmarkError as exc:
        sys.exit(f"FAILED: {exc}")


if __name__ == "__main__":
    main()
