"""``stream-migrator demo``: start the stack and the processes, wait until caught up, report."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection

from stream_migrator.demo.data import LiveWriter, seed
from stream_migrator.demo.report import DemoReport, scrape
from stream_migrator.demo.rollout import run_rollout_demo
from stream_migrator.errors import InfraError
from stream_migrator.infra import DEFAULT_STATE_DIR, LocalStack, free_port
from stream_migrator.mongo import connect
from stream_migrator.progress import Progress
from stream_migrator.reconcile import CompareReport, full_compare
from stream_migrator.redact import redact_uri
from stream_migrator.settings import load_settings, mongo_uri_env
from stream_migrator.spec import get_spec


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
        **mongo_uri_env(mongo_uri),  # the file, when the URI came from SM_MONGO_URI_FILE
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
