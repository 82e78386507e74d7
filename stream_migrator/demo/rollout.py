"""``demo --rollout``: the caught-up demo migration staged, a fence breached, rolled back."""

from __future__ import annotations

import random
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from stream_migrator.app import reverse_stream
from stream_migrator.demo.data import v1_order
from stream_migrator.errors import TransformError
from stream_migrator.mongo import connect
from stream_migrator.rollout import audit
from stream_migrator.rollout.controller import Controller
from stream_migrator.rollout.gate import compare_gate
from stream_migrator.rollout.plan import load_plan
from stream_migrator.rollout.reverse import (
    drain_and_verify,
    reverse_stream_problem,
    start_position,
)
from stream_migrator.rollout.transitions import label
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import load_settings
from stream_migrator.spec import get_spec

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
                before = label(c.status(migration))
                t0 = time.monotonic()
                after = c.advance(migration, reason="demo")
                print(
                    f"[rollout] advance {before:>28} -> {label(after):<34} "
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
                f"[rollout] exposure reverted to the last safe tier: {label(halted)}",
                flush=True,
            )
            print("[rollout] transform resumed; rolling back (drain + reverse compare) ...")
            t0 = time.monotonic()
            done = c.rollback(migration, "demo: lag fence breached")
            last = audit.entries(client, s.metadata_db, migration)[-1]["details"]
            print(
                f"[rollout] {label(done)} in {time.monotonic() - t0:.1f} s: "
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
