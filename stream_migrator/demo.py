"""``stream-migrator demo``: a live shop.orders migrated end to end, with a report."""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families
from pymongo import InsertOne
from pymongo.collection import Collection

from stream_migrator.errors import InfraError
from stream_migrator.infra import DEFAULT_STATE_DIR, LocalStack, free_port
from stream_migrator.mongo import connect
from stream_migrator.progress import Progress
from stream_migrator.reconcile import CompareReport, full_compare
from stream_migrator.redact import redact_uri
from stream_migrator.settings import load_settings
from stream_migrator.spec import get_spec

_CITIES = ["Springfield", "Shelbyville", "Ogdenville", "North Haverbrook", "Capital City"]
_STREETS = ["Main St", "Elm St", "Oak Ave", "Evergreen Terrace", "Market St"]
_NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]


@dataclass(frozen=True)
class DemoOptions:
    docs: int = 20_000
    live_seconds: float = 15.0
    live_rate: int = 300
    bad_docs: int = 5
    keep_stack: bool = False
    timeout_s: float = 600.0
    migration: str | None = None
    rollout: bool = False  # then a staged rollout follows the catch-up (run_rollout_demo)


@dataclass
class DemoReport:
    captured: int
    applied: int
    stale: int
    quarantined: int
    lag: int
    seconds: float
    backlog_seconds: float
    backlog_docs: int
    live_writes: int
    compare: CompareReport

    @property
    def docs_per_second(self) -> float:
        return self.backlog_docs / self.backlog_seconds if self.backlog_seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.compare.mismatches == 0 and self.lag == 0

    def render(self) -> str:
        c = self.compare
        lines = [
            "",
            "== stream-migrator demo report ==",
            f"events captured       {self.captured}",
            f"events applied        {self.applied} written, {self.stale} stale (skipped by the "
            "version guard)",
            f"events quarantined    {self.quarantined}",
            f"consumer lag          {self.lag}",
            f"live writes           {self.live_writes} (inserts, updates, deletes while migrating)",
            f"time taken            {self.seconds:.1f} s (capture start to caught up)",
            f"backlog drained       {self.backlog_docs} seeded documents in "
            f"{self.backlog_seconds:.1f} s = {self.docs_per_second:,.0f} documents/s "
            "(snapshot + transform + write)",
            f"source documents      {c.source_count} ({c.untransformable} untransformable, "
            "in quarantine)",
            f"target documents      {c.target_count}",
            f"full compare          {c.mismatches} mismatches (missing {c.missing}, extra "
            f"{c.extra}, different {c.different})",
            "RESULT                " + ("OK: target matches source" if self.ok else "DIVERGED"),
        ]
        lines += [f"  {e}" for e in c.examples]
        return "\n".join(lines)


def v1_order(rng: random.Random, i: int) -> dict[str, Any]:
    """A synthetic v1 order."""
    return {
        "_id": ObjectId(),
        "cust_name": rng.choice(_NAMES),
        "address": f"{rng.randint(1, 999)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}, "
        f"{rng.randint(10000, 99999)}",
        "total": round(rng.uniform(1, 500), 2),
        "items": [
            {"sku": f"SKU-{rng.randint(1, 500):04d}", "qty": rng.randint(1, 5)}
            for _ in range(rng.randint(1, 4))
        ],
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0),
        "seq": i,
        **({"status": "paid"} if i % 3 == 0 else {}),
    }


def seed(coll: Collection[dict[str, Any]], count: int, bad: int, rng: random.Random) -> None:
    """Insert ``count`` v1 orders, ``bad`` of them with an address the spec cannot split."""
    batch: list[InsertOne[dict[str, Any]]] = []
    for i in range(count):
        doc = v1_order(rng, i)
        if i < bad:
            doc["address"] = "no commas here"
        batch.append(InsertOne(doc))
        if len(batch) == 2_000:
            coll.bulk_write(batch, ordered=False)
            batch = []
    if batch:
        coll.bulk_write(batch, ordered=False)


class LiveWriter(threading.Thread):
    """Inserts, updates and deletes on the source at a steady rate, like an application."""

    def __init__(self, coll: Collection[dict[str, Any]], seconds: float, rate: int) -> None:
        super().__init__(name="live-writer", daemon=True)
        self._coll = coll
        self._seconds = seconds
        self._rate = max(1, rate)
        self._rng = random.Random(7)
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the demo report
            self.error = exc

    def _run(self) -> None:
        ids = [d["_id"] for d in self._coll.find({}, {"_id": 1}).limit(5_000)]
        end = time.monotonic() + self._seconds
        interval = 1.0 / self._rate
        next_at = time.monotonic()
        seq = 10_000_000
        while time.monotonic() < end:
            roll = self._rng.random()
            if roll < 0.4 or not ids:
                doc = v1_order(self._rng, seq)
                seq += 1
                self._coll.insert_one(doc)
                ids.append(doc["_id"])
            elif roll < 0.85:
                self._coll.update_one(
                    {"_id": self._rng.choice(ids)},
                    {"$set": {"total": round(self._rng.uniform(1, 500), 2), "status": "shipped"}},
                )
            else:
                victim = ids.pop(self._rng.randrange(len(ids)))
                self._coll.delete_one({"_id": victim})
            self.writes += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def scrape(port: int) -> dict[str, float]:
    """Sum every sample of a process's /metrics by sample name and outcome/op label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if "outcome" in sample.labels:
                name += ":" + sample.labels["outcome"]
            values[name] = values.get(name, 0.0) + sample.value
    return values


def _safe_scrape(port: int) -> dict[str, float]:
    try:
        return scrape(port)
    except OSError:
        return {}


def run_demo(options: DemoOptions) -> DemoReport:
    """Run the whole demo and print its report; the stack is stopped unless asked to keep it."""
    settings = load_settings()
    # Existing servers only when both are given (SM_MONGO_URI or SM_MONGO_URI_FILE, and
    # SM_KAFKA_BOOTSTRAP): a default is the local stack's job.
    given = {"mongo_uri", "kafka_bootstrap"} <= settings.model_fields_set
    external = given and settings.mongo_uri.get_secret_value() and settings.kafka_bootstrap
    stack = LocalStack(DEFAULT_STATE_DIR)
    started_stack = False
    if external:
        mongo_uri, bootstrap = settings.mongo_uri.get_secret_value(), settings.kafka_bootstrap
        print(f"using existing servers: kafka {bootstrap}, mongo {redact_uri(mongo_uri)}")
    else:
        had = {r["name"] for r in stack.status() if r["answering"]}
        print("starting the local stack (Kafka KRaft broker + mongo-java-server) ...", flush=True)
        stack.up()
        started_stack = had != {"kafka", "mongo"}
        mongo_uri, bootstrap = stack.mongo_uri(), stack.kafka_bootstrap()
        print(f"kafka {bootstrap}   mongo {redact_uri(mongo_uri)}")
    try:
        return _run(options, mongo_uri, bootstrap)
    finally:
        if started_stack and not options.keep_stack:
            print("stopping the local stack ...", flush=True)
            stack.down()


def _run(options: DemoOptions, mongo_uri: str, bootstrap: str) -> DemoReport:
    migration = options.migration or f"demo-{int(time.time())}"
    rng = random.Random(42)
    client = connect(mongo_uri, app="demo")
    source, target = client["shop"]["orders"], client["shop"]["orders_v2"]
    source.drop()
    target.drop()
    print(f"seeding shop.orders with {options.docs} v1 documents ...", flush=True)
    t0 = time.monotonic()
    seed(source, options.docs, options.bad_docs, rng)
    print(f"seeded in {time.monotonic() - t0:.1f} s", flush=True)

    log_dir = DEFAULT_STATE_DIR.parent / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = {"capture": free_port(), "transform": free_port()}
    env = {
        **os.environ,
        "SM_MONGO_URI": mongo_uri,
        "SM_KAFKA_BOOTSTRAP": bootstrap,
        "SM_MIGRATION": migration,
        "SM_SOURCE": "shop.orders",
        "SM_TARGET": "shop.orders_v2",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    writer = LiveWriter(source, options.live_seconds, options.live_rate)
    try:
        for role, port in ports.items():
            with (log_dir / f"{role}.log").open("wb") as log:
                procs[role] = subprocess.Popen(
                    [sys.executable, "-m", "stream_migrator", role, "--metrics-port", str(port)],
                    env={**env, "SM_METRICS_PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        print(
            f"capture and transform running (logs in {log_dir}); live writes for "
            f"{options.live_seconds:.0f} s at {options.live_rate}/s",
            flush=True,
        )
        writer.start()
        backlog = options.docs - options.bad_docs
        with Progress("backlog applied", backlog, unit="docs") as progress:
            final = _wait_caught_up(
                options, procs, ports, writer, source, target, started, progress
            )
        elapsed = time.monotonic() - started
        if options.rollout and not run_rollout_demo(
            mongo_uri, bootstrap, migration, procs["transform"]
        ):
            raise InfraError("the staged rollout demo did not behave as designed (see above)")
    finally:
        _stop(procs)
        client.close()
    cap, tra, compare, backlog_s = final
    applied = int(tra.get("sm_events_applied_total:written", 0))
    report = DemoReport(
        captured=int(cap.get("sm_events_captured_total", 0)),
        applied=applied,
        stale=int(tra.get("sm_events_applied_total:stale", 0)),
        quarantined=int(tra.get("sm_events_quarantined_total", 0)),
        lag=int(tra.get("sm_consumer_lag_events", -1)),
        seconds=elapsed,
        backlog_seconds=backlog_s,
        backlog_docs=options.docs,
        live_writes=writer.writes,
        compare=compare,
    )
    print(report.render(), flush=True)
    return report


def _wait_caught_up(
    options: DemoOptions,
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    writer: LiveWriter,
    source: Collection[dict[str, Any]],
    target: Collection[dict[str, Any]],
    started: float,
    progress: Progress,
) -> tuple[dict[str, float], dict[str, float], CompareReport, float]:
    """Report progress each second; return metrics once lag is 0 and the full compare matches."""
    spec = get_spec("orders.v1_to_v2")
    stable_since: float | None = None
    last_captured = -1.0
    backlog_s = 0.0  # when the seeded backlog was fully applied
    while True:
        time.sleep(1.0)
        for role, proc in procs.items():
            if proc.poll() is not None:
                raise InfraError(
                    f"the {role} process exited with code {proc.returncode}; "
                    f"see .sm/demo-logs/{role}.log"
                )
        if writer.error is not None:
            raise InfraError(f"the live writer failed: {writer.error}")
        cap, tra = _safe_scrape(ports["capture"]), _safe_scrape(ports["transform"])
        captured = cap.get("sm_events_captured_total", 0.0)
        applied = tra.get("sm_events_applied_total:written", 0.0)
        lag = tra.get("sm_consumer_lag_events", float("nan"))
        elapsed = time.monotonic() - started
        if not backlog_s and applied >= options.docs - options.bad_docs:
            backlog_s = elapsed
        live = "writing" if writer.is_alive() else "done"
        lag_text = "-" if math.isnan(lag) else f"{lag:.0f}"  # "-": not measured yet
        progress.update(min(int(applied), progress.total or int(applied)))
        progress.write(
            f"[{elapsed:6.1f}s] captured {captured:>8.0f}  applied {applied:>8.0f}  "
            f"lag {lag_text:>6}  live writes {writer.writes:>6} ({live})"
        )
        if elapsed > options.timeout_s:
            raise InfraError(f"the demo did not catch up within {options.timeout_s:.0f} s")
        if writer.is_alive() or lag != 0 or captured != last_captured:
            stable_since, last_captured = None, captured
            continue
        stable_since = stable_since or time.monotonic()
        if time.monotonic() - stable_since < 2.0:
            continue
        compare = full_compare(source, target, spec)
        if compare.mismatches == 0:
            return cap, tra, compare, backlog_s or elapsed
        progress.write(f"full compare found {compare.mismatches} mismatches; waiting ...")
        stable_since = None


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM both processes and wait: they drain, flush and commit before exiting."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for role, proc in procs.items():
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        print(f"{role} stopped (exit code {code})", flush=True)


_ROLLOUT_PLAN = """
[plan]
evaluation_interval_s = 0.5
advance_every_s = 0
retention_s = 0
tiers = [
  {{ name = "internal", tenants = ["staff"] }},
  {{ name = "10%", percent = 10 }},
  {{ name = "50%", percent = 50 }},
]
[collections."shop.orders"]
fields = []
[collections."shop.orders_v2"]
fields = []
[[migration]]
name = "{name}"
spec = "orders.v1_to_v2"
source = "shop.orders"
target = "shop.orders_v2"
[migration.fences]
max_lag_events = {max_lag}
max_divergence_ratio = 0.5
max_error_rate = 0.05
"""


def run_rollout_demo(
    mongo_uri: str, bootstrap: str, migration: str, transform: subprocess.Popen[bytes]
) -> bool:
    """``demo --rollout``: stage the caught-up migration, breach a fence, roll back.

    Runs while the demo's capture and transform still run. The fence breach is
    real lag: the transform process is paused (SIGSTOP) while a burst of inserts
    is captured, so the group lag exceeds ``max_lag_events``. Returns True when
    every step behaved as designed (halt + revert, then a verified rollback).
    """
    import tempfile
    from pathlib import Path

    from stream_migrator.app import reverse_stream
    from stream_migrator.rollout import audit
    from stream_migrator.rollout.controller import Controller, _label
    from stream_migrator.rollout.gate import compare_gate
    from stream_migrator.rollout.plan import load_plan
    from stream_migrator.rollout.reverse import reverse_stream_problem, start_position
    from stream_migrator.runtime import StopFlag

    max_lag = 200
    s = load_settings(
        mongo_uri=mongo_uri,
        kafka_bootstrap=bootstrap,
        migration=migration,
        source="shop.orders",
        target="shop.orders_v2",
        spec="orders.v1_to_v2",
    )
    client = connect(mongo_uri, app="demo-rollout")
    stop = StopFlag()
    threads: list[threading.Thread] = []
    with tempfile.TemporaryDirectory(prefix="sm-rollout-") as tmp:
        plan_path = Path(tmp) / "plan.toml"
        plan_path.write_text(_ROLLOUT_PLAN.format(name=migration, max_lag=max_lag))
        print(f"\n== staged rollout of {migration} (plan {plan_path}) ==", flush=True)
        c = Controller(
            load_plan(plan_path),
            client,
            s,
            compare_gate,
            "demo",
            drainer=_demo_drainer,
            reverse_probe=reverse_stream_problem,
        )
        try:
            c.ensure_states()
            start_position(s)  # the reverse stream starts before any write on new
            threads, _ended = reverse_stream(s, stop)
            if not _wait_for_reverse_stream(s):
                return False
            for _ in range(4):  # shadow, verify, canary internal, canary 10%
                before = _label(c.status(migration))
                t0 = time.monotonic()
                after = c.advance(migration, reason="demo")
                print(
                    f"[rollout] advance {before:>28} -> {_label(after):<34} "
                    f"(fences held, gate READY, {time.monotonic() - t0:.1f} s)",
                    flush=True,
                )
            t0 = time.monotonic()
            halted = _inject_lag_breach(c, migration, transform, max_lag)
            if halted is None:
                print("[rollout] the controller did not halt within 60 s", flush=True)
                return False
            print(
                f"[rollout] HALTED after {time.monotonic() - t0:.1f} s: {halted.halt_reason}\n"
                f"[rollout] exposure reverted to the last safe tier: {_label(halted)}",
                flush=True,
            )
            print("[rollout] transform resumed; rolling back (drain + reverse compare) ...")
            t0 = time.monotonic()
            done = c.rollback(migration, "demo: lag fence breached")
            last = audit.entries(client, s.metadata_db, migration)[-1]["details"]
            print(
                f"[rollout] {_label(done)} in {time.monotonic() - t0:.1f} s: "
                f"{last.get('compared')} documents compared, {last.get('mismatches')} "
                f"mismatches ({last.get('rejected_by_spec', 0)} seeded bad documents stay "
                f"only in old), read path {done.read_path}",
                flush=True,
            )
            _print_audit(audit.entries(client, s.metadata_db, migration))
            return done.read_path == "old" and last.get("mismatches") == last.get(
                "rejected_by_spec", 0
            )
        finally:
            stop.set("demo done")
            for t in threads:
                t.join(60)
            client.close()


def _wait_for_reverse_stream(s: Any, timeout_s: float = 60.0) -> bool:
    """Until the reverse worker has joined its group (the controller asks before canary)."""
    from stream_migrator.rollout.reverse import reverse_stream_problem

    deadline = time.monotonic() + timeout_s
    while (problem := reverse_stream_problem(s)) is not None:
        if time.monotonic() > deadline:
            print(f"[rollout] the reverse stream did not start: {problem}", flush=True)
            return False
        time.sleep(0.5)
    print("reverse stream running (new -> inverse -> old)", flush=True)
    return True


def _demo_drainer(s: Any) -> tuple[bool, dict[str, Any]]:
    """``drain_and_verify``, except that the seeded bad documents may stay only in old.

    The forward spec rejects them (they are quarantined), so they are in old and
    never in new: the reverse compare reports them as "extra in old". Accepted
    only when every mismatch is such an extra and their count is exactly the
    number of source documents the spec rejects.
    """
    from stream_migrator.errors import TransformError
    from stream_migrator.rollout.reverse import drain_and_verify

    spec = get_spec(s.spec, s.hook_policy)
    client = connect(s.mongo_uri.get_secret_value(), app="demo-drain")
    try:
        db, coll = s.split_ns(s.source)
        rejected = 0
        for doc in client[db][coll].find({}):
            try:
                spec.transform(doc)
            except TransformError:
                rejected += 1
    finally:
        client.close()
    deadline = time.monotonic() + 120
    while True:
        ok, details = drain_and_verify(s, timeout_s=2)
        details["rejected_by_spec"] = rejected
        if ok:
            return True, details
        drained = details.get("reverse_lag") == 0 and details.get("forward_lag") == 0
        extras = details.get("extra_in_old")
        # Documents on new the inverse rejects block it as in drain_and_verify.
        blocked = details.get("untransformable", 0)
        if drained and not blocked and details.get("mismatches") == extras == rejected:
            return True, details
        if time.monotonic() > deadline:
            return False, details


def _print_audit(rows: list[dict[str, Any]]) -> None:
    print("\n== audit trail ==")
    for e in rows:
        move = f"{e.get('from') or '-'} -> {e.get('to') or '-'}"
        at = e["at"].isoformat(timespec="seconds")
        print(f"{at}  {e['operator']:6} {e['action']:14} {move:58} {e.get('reason', '')}")


def _inject_lag_breach(
    c: Any, migration: str, transform: subprocess.Popen[bytes], max_lag: int
) -> Any:
    """Pause the transform, insert a burst, tick until halted; the halted state or None."""
    rng = random.Random(7)
    burst = [v1_order(rng, 10_000_000 + i) for i in range(max_lag * 3)]
    print(
        f"[rollout] injecting a fence breach: transform paused, {len(burst)} inserts "
        f"(max_lag_events = {max_lag})",
        flush=True,
    )
    transform.send_signal(signal.SIGSTOP)
    try:
        c.client["shop"]["orders"].insert_many(burst)
        t0 = time.monotonic()
        halted = None
        while time.monotonic() - t0 < 60:
            c.tick()
            state = c.status(migration)
            if state.halted:
                halted = state
                break
            time.sleep(c.plan.evaluation_interval_s)
    finally:
        transform.send_signal(signal.SIGCONT)
    return halted
