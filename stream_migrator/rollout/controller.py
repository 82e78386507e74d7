"""The rollout controller: moves migrations through the stages while fences hold.

Every transition is a compare-and-set on the state document (see ``state.py``)
followed by an audit entry. The controller never writes data; exposure is the
router's business, the reverse stream (``reverse.py``) runs as its own process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from stream_migrator.errors import RetryableError
from stream_migrator.kafka import consumer_config
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.rollout import audit
from stream_migrator.rollout import metrics as rm
from stream_migrator.rollout.errors import RolloutError, VersionConflictError
from stream_migrator.rollout.fences import Breach, Measurements, evaluate, measure, missing
from stream_migrator.rollout.gate import Gate, VerdictLike
from stream_migrator.rollout.leases import AckReport, LeaseStore, LeaseWatch
from stream_migrator.rollout.plan import MigrationPlan, Plan
from stream_migrator.rollout.stages import (
    ORDER,
    TERMINAL,
    WRITES_ON_NEW,
    Stage,
    can_roll_back,
    stage_index,
    tier_stage,
)
from stream_migrator.rollout.state import RolloutState, StateStore
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec

log = get_logger("rollout")

#: Drains the reverse stream and verifies the old side; returns (ok, details) for the audit.
Drainer = Callable[[Settings], tuple[bool, dict[str, Any]]]
#: Why the reverse stream is not ready to carry new-path writes back (None = ready).
ReverseProbe = Callable[[Settings], str | None]


@dataclass(frozen=True)
class Evaluation:
    verdict: VerdictLike
    measured: Measurements
    breaches: list[Breach]
    #: Fences with a limit but no measurement, and whether they hold the stage.
    missing: list[str] = dataclasses.field(default_factory=list)
    hold_on_missing: bool = True

    @property
    def healthy(self) -> bool:
        return not self.breaches

    @property
    def held(self) -> bool:
        """A fence cannot be checked and the plan says hold (``on_missing = "hold"``)."""
        return bool(self.missing) and self.hold_on_missing

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"measured": vars(self.measured), "gate": self.verdict.reasons}
        if self.missing:
            out["unmeasured"] = self.missing
        return out


class MeasurementHistory:
    """The last ``size`` fence measurements of each migration (the console's sparklines).

    Kept in memory only, so a restarted controller starts with an empty history:
    the audit trail stays the record, this is only for drawing the recent trend.
    """

    def __init__(self, size: int = 120) -> None:
        self._size = size
        self._lock = threading.Lock()  # the console reads from the HTTP server's threads
        self._by_migration: dict[str, deque[tuple[float, dict[str, Any]]]] = {}

    def record(self, migration: str, measured: Measurements, at: float | None = None) -> None:
        with self._lock:
            ring = self._by_migration.setdefault(migration, deque(maxlen=self._size))
            ring.append((time.time() if at is None else at, dict(vars(measured))))

    def of(self, migration: str) -> list[tuple[float, dict[str, Any]]]:
        """(epoch seconds, measured fields) of each kept evaluation, oldest first."""
        with self._lock:
            return list(self._by_migration.get(migration, ()))


def migration_settings(base: Settings, m: MigrationPlan) -> Settings:
    """The pipeline settings of one planned migration (servers from ``base``)."""
    return base.model_copy(
        update={"migration": m.name, "source": m.source, "target": m.target, "spec": m.spec}
    )


class Controller:
    """Advance, halt, resume, roll back and complete the migrations of one plan."""

    def __init__(
        self,
        plan: Plan,
        client: MongoClient[dict[str, Any]],
        settings: Settings,
        gate: Gate,
        operator: str,
        *,
        drainer: Drainer | None = None,
        reverse_probe: ReverseProbe | None = None,
        router_wait_s: float | None = None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.settings = settings
        self.store = StateStore(client, settings.metadata_db)
        self.gate = gate
        self.operator = operator
        self.drainer = drainer
        # Asked before the first step that lets applications write to new: with
        # rollback required, writes on new need a running reverse stream from the
        # first one on, or a rollback could not bring them back.
        self.reverse_probe = reverse_probe
        # Rollback waits for every router to acknowledge the old-only state (or to let
        # its lease expire): at most this long per attempt (None = as long as the
        # pending routers' leases need), then it stays in rolling_back and is retried.
        self.router_wait_s = router_wait_s
        self.leases = LeaseStore(client, settings.metadata_db)
        self._lease_watch = LeaseWatch()
        self._breaches_in_row: dict[str, int] = {}
        self.history = MeasurementHistory()

    # -- state ------------------------------------------------------------------
    def ensure_states(self) -> list[str]:
        """Create the state document of every planned migration that has none."""
        created = []
        for m in self.plan.migrations:
            spec = get_spec(m.spec, self.settings.hook_policy)
            fresh = RolloutState(
                migration=m.name,
                old_ns=m.source,
                new_ns=m.target,
                old_schema=spec.source_version,
                new_schema=spec.target_version,
                tenants_deny=m.tenants_deny,
            )
            if self.store.create(fresh, self.operator):
                self._audit(m.name, "init", None, Stage.PLANNED, "state document created")
                created.append(m.name)
            else:
                # A controller killed inside a transition: its audit entry is appended now.
                self.settle_journal(self.store.get(m.name))
        return created

    def status(self, name: str) -> RolloutState:
        self.plan.migration(name)
        state = self.store.get(name)
        self.settle_journal(state)
        return state

    # -- measurements -----------------------------------------------------------
    def evaluate(self, name: str) -> Evaluation:
        """Ask the gate, read the pipeline's measurements, check every fence."""
        m = self.plan.migration(name)
        s = migration_settings(self.settings, m)
        verdict = self.gate(s)
        consumer = Consumer(
            consumer_config(s.kafka_bootstrap, s.consumer_group, "sm-rollout", s.kafka_client)
        )
        try:
            measured = measure(
                verdict,
                consumer=consumer,
                changes_topic=s.changes_topic,
                quarantine_topic=s.quarantine_topic,
                migration=name,
                metrics_urls=m.metrics_urls,
            )
        finally:
            consumer.close()
        self.history.record(name, measured)
        for field_name, value in vars(measured).items():
            if value is not None:
                rm.FENCE_VALUE.labels(name, field_name).set(value)
        breaches = evaluate(m.fences, measured)
        for b in breaches:
            rm.FENCE_BREACHES.labels(name, b.fence).inc()
        unmeasured = missing(m.fences, measured)
        return Evaluation(verdict, measured, breaches, unmeasured, m.fences.on_missing == "hold")

    def _hold(self, name: str, state: RolloutState, ev: Evaluation) -> RolloutState:
        """Record (once per distinct cause) that fences without a measurement hold the stage."""
        reason = (
            f"held: fence(s) {', '.join(ev.missing)} have no measurement (on_missing = "
            '"hold"); make them measurable (metrics_urls reachable, topics present) or set '
            '[migration.fences] on_missing = "skip"'
        )
        if state.hold_reason == reason:
            return state
        details = {**ev.details(), "missing": ev.missing}
        after = self._transition(state, "fence_hold", reason, details, hold_reason=reason)
        log.warning("rollout.held", migration=name, missing=ev.missing)
        return after

    def _unhold(self, name: str, state: RolloutState) -> RolloutState:
        if state.hold_reason is None:
            return state
        return self._transition(
            state, "fence_hold_cleared", "every fence is measured", hold_reason=None
        )

    # -- transitions ------------------------------------------------------------
    def advance(
        self, name: str, *, reason: str = "", state: RolloutState | None = None
    ) -> RolloutState:
        """One step forward, only while every fence holds and the gate says READY."""
        m = self.plan.migration(name)
        before = state or self.store.get(name)
        if before.halted:
            raise RolloutError(
                f"{name} is halted ({before.halt_reason}); find the cause, then `rollout resume`"
            )
        if before.stage in TERMINAL or before.stage == Stage.ROLLING_BACK:
            raise RolloutError(f"{name} is {before.stage}; there is nothing to advance")
        if before.stage == Stage.CUTOVER:
            raise RolloutError(
                f"{name} is at cutover; the last step is `rollout complete`, allowed "
                f"{self.plan.retention_s:g} s after cutover"
            )
        details: dict[str, Any] = {}
        if before.stage == Stage.PLANNED:
            self._check_dependencies(m)
        else:
            ev = self.evaluate(name)
            details = ev.details()
            if ev.breaches:
                raise RolloutError(
                    f"{name} not advanced: fences breached ({'; '.join(map(str, ev.breaches))})"
                )
            if ev.held:
                held = self._hold(name, before, ev)
                raise RolloutError(f"{name} not advanced: {held.hold_reason}")
            if not ev.verdict.ready:
                raise RolloutError(
                    f"{name} not advanced: the reconciler gate is not READY "
                    f"({'; '.join(ev.verdict.reasons)})"
                )
        self._check_reverse_stream(m, before)
        changes = self._next_step(m, before)
        after = self._transition(before, "advance", reason, details, **changes, hold_reason=None)
        rm.TRANSITIONS.labels(name, "advance").inc()
        self._export(after)
        log.info("rollout.advanced", migration=name, to=_label(after))
        return after

    def _next_step(self, m: MigrationPlan, s: RolloutState) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        if s.stage in {Stage.PLANNED, Stage.SHADOW}:
            return {"stage": ORDER[stage_index(s.stage) + 1], "step_entered_at": now}
        if s.stage == Stage.VERIFY:
            return {**self._tier(m, 0), "last_safe_tier": -1, "step_entered_at": now}
        # canary / ramp: next tier, or cutover after the last one
        if s.tier + 1 < len(m.tiers):
            return {**self._tier(m, s.tier + 1), "last_safe_tier": s.tier, "step_entered_at": now}
        return {
            "stage": Stage.CUTOVER,
            "last_safe_tier": s.tier,
            "percentage": 100.0,
            "cutover_at": now,
            "step_entered_at": now,
        }

    def _tier(self, m: MigrationPlan, index: int) -> dict[str, Any]:
        """Exposure of tier ``index`` (-1 = none): its percentage and every tenant so far."""
        if index < 0:
            return {"tier": -1, "percentage": 0.0, "tenants_allow": ()}
        tier = m.tiers[index]
        tenants: list[str] = []
        for t in m.tiers[: index + 1]:
            tenants.extend(x for x in t.tenants if x not in tenants)
        return {
            "tier": index,
            "stage": tier_stage(tier.percent, self.plan.ramp_from_percent),
            "percentage": tier.percent,
            "tenants_allow": tuple(tenants),
        }

    def _check_reverse_stream(self, m: MigrationPlan, s: RolloutState) -> None:
        """Refuse the step into canary while writes on new could not be carried back."""
        if s.stage != Stage.VERIFY or not m.rollback_required or self.reverse_probe is None:
            return
        problem = self.reverse_probe(migration_settings(self.settings, m))
        if problem is not None:
            raise RolloutError(
                f"{m.name} not advanced to canary: rollback is required and the reverse "
                f"stream is not ready ({problem}); start `stream-migrator rollout reverse "
                f"PLAN {m.name}` first"
            )

    def _check_dependencies(self, m: MigrationPlan) -> None:
        for dep in m.depends_on:
            state = self.store.load(dep)
            if state is None or state.stage not in {Stage.CUTOVER, Stage.COMPLETE}:
                raise RolloutError(
                    f"{m.name} depends on {dep}, which is "
                    f"{state.stage if state else 'not started'}; it must reach cutover first"
                )

    def halt(
        self,
        name: str,
        reason: str,
        *,
        revert: bool = False,
        breaches: list[Breach] | None = None,
        state: RolloutState | None = None,
    ) -> RolloutState:
        """Stop advancing; with ``revert``, exposure goes back to the last safe tier (or 0)."""
        m = self.plan.migration(name)
        before = state or self.store.get(name)
        if before.stage in TERMINAL:
            raise RolloutError(f"{name} is {before.stage}; halting it changes nothing")
        changes: dict[str, Any] = {"halted": True, "halt_reason": reason}
        if revert and before.stage in {Stage.CANARY, Stage.RAMP, Stage.CUTOVER}:
            target = before.last_safe_tier
            changes.update(self._tier(m, target))
            changes["last_safe_tier"] = max(-1, target - 1)
            if target < 0:
                changes["stage"] = Stage.CANARY
        action = "fence_breach" if breaches else "halt"
        details = {
            "breaches": [vars(b) for b in breaches or []],
            "exposure_before": before.percentage,
        }
        after = self._transition(before, action, reason, details, **changes)
        rm.TRANSITIONS.labels(name, "halt").inc()
        self._export(after)
        log.warning("rollout.halted", migration=name, reason=reason, to=_label(after))
        return after

    def resume(self, name: str, reason: str = "") -> RolloutState:
        """Clear the halt; exposure stays where the halt left it."""
        before = self.store.get(name)
        if not before.halted:
            raise RolloutError(f"{name} is not halted")
        if before.stage == Stage.ROLLING_BACK:
            raise RolloutError(f"{name} is rolling back; finish it with `rollout rollback` again")
        after = self._transition(before, "resume", reason, halted=False, halt_reason=None)
        rm.TRANSITIONS.labels(name, "resume").inc()
        self._export(after)
        return after

    def rollback(self, name: str, reason: str, *, audit_blocked: bool = True) -> RolloutState:
        """Halt, drain and verify, route all to old, wait for every router, verify again.

        The steps, each one a state the command can be re-run from:

        1. ``rolling_back`` with exposure frozen: readers stay where they are until
           the old side is proven current (drain both streams, reverse compare).
        2. ``rolling_back 0%``: every key routes to old (audit ``rollback_route_old``).
           Routers that have not refreshed yet still send writes to new; the reverse
           stream (still running) carries them back.
        3. Wait until every router has acknowledged that state in its lease, or its
           lease expired (it then refuses writes to new by itself).
        4. Drain and verify once more - now nothing can still write to new - and
           only then ``rolled_back``.

        If a step cannot finish the migration stays in ``rolling_back`` (halted) and
        the command can simply be re-run; a running controller retries it every
        evaluation (``audit_blocked=False``: one ``rollback_blocked`` entry per
        attempt, not one per retry).
        """
        before = self.store.get(name)
        if not can_roll_back(before.stage):
            raise RolloutError(f"{name} is {before.stage}; rollback is legal only before complete")
        state = before
        if before.stage != Stage.ROLLING_BACK:
            state = self._transition(
                before,
                "rollback_start",
                reason,
                stage=Stage.ROLLING_BACK,
                halted=True,
                halt_reason=f"rollback: {reason}",
                hold_reason=None,
                extra={**before.extra, "rolled_back_from": str(before.stage)},
            )
        came_from = Stage(state.extra.get("rolled_back_from", Stage.PLANNED))
        details: dict[str, Any] = {"from_stage": str(came_from)}
        if came_from in WRITES_ON_NEW:
            if self.drainer is None:
                raise RolloutError(
                    f"{name} was at {came_from}: writes may be on the new collection, so the "
                    "reverse stream must be drained and verified first, and no drainer is set"
                )
            s = migration_settings(self.settings, self.plan.migration(name))
            if "old_only_version" not in state.extra:
                ok, drained = self.drainer(s)
                if not ok:
                    self._blocked(name, state, reason, {**details, **drained}, audit_blocked)
                    raise RolloutError(
                        f"{name} stays in rolling_back: the old side is not verified yet "
                        f"({drained}); is the reverse stream running? re-run `rollout "
                        "rollback` when it has drained"
                    )
                state = self._route_old(name, state, reason, drained)
            version = int(state.extra["old_only_version"])
            acks = self._await_routers(name, version)
            details.update(acks.summary())
            if acks.pending:
                self._blocked(name, state, reason, details, audit_blocked)
                raise RolloutError(
                    f"{name} stays in rolling_back: router(s) "
                    f"{', '.join(lease.describe() for lease in acks.pending)} have not "
                    f"acknowledged the old-only state (version {version}) and their leases "
                    "have not expired; they may still write to new. Re-run `rollout rollback` "
                    f"(it waits up to their lease); see {self.leases.coll.full_name}"
                )
            # Now nothing routes writes to new: a last drain and compare catches every
            # write that a router made there before it acknowledged.
            ok, drained = self.drainer(s)
            details.update(drained)
            if not ok:
                self._blocked(name, state, reason, details, audit_blocked)
                raise RolloutError(
                    f"{name} stays in rolling_back (routing old): the final verification "
                    f"after every router acknowledged failed ({drained}); is the reverse "
                    "stream running? re-run `rollout rollback` when it has drained"
                )
        after = self._transition(
            state,
            "rollback",
            reason,
            details,
            stage=Stage.ROLLED_BACK,
            tier=-1,
            last_safe_tier=-1,
            percentage=0.0,
            tenants_allow=(),
            halt_reason=f"rolled back: {reason}",
        )
        if came_from in WRITES_ON_NEW:
            self.leases.forget(acks.expired)  # crashed routers: the next rollback need not wait
        rm.TRANSITIONS.labels(name, "rollback").inc()
        self._export(after)
        log.warning("rollout.rolled_back", migration=name, reason=reason)
        return after

    def _route_old(
        self, name: str, state: RolloutState, reason: str, drained: dict[str, Any]
    ) -> RolloutState:
        """Still rolling back, every key on old; remember the version routers must acknowledge."""
        after = self._transition(
            state,
            "rollback_route_old",
            reason,
            drained,
            tier=-1,
            last_safe_tier=-1,
            percentage=0.0,
            tenants_allow=(),
            extra={**state.extra, "old_only_version": state.version + 1},
        )
        rm.TRANSITIONS.labels(name, "rollback_route_old").inc()
        self._export(after)
        log.warning("rollout.routing_old", migration=name, version=after.version)
        return after

    def _await_routers(self, name: str, version: int) -> AckReport:
        """Poll the router leases until none is pending, or the wait is over."""
        started = time.monotonic()
        while True:
            report = self._lease_watch.classify(self.leases.of(name), version)
            if not report.pending:
                return report
            needed = max(self._lease_watch.expiry_after(lease) for lease in report.pending)
            wait = needed if self.router_wait_s is None else min(needed, self.router_wait_s)
            if time.monotonic() - started >= wait:
                return report
            time.sleep(0.2)

    def _blocked(
        self,
        name: str,
        state: RolloutState,
        reason: str,
        details: dict[str, Any],
        audit_blocked: bool,
    ) -> None:
        if audit_blocked:
            self._audit(name, "rollback_blocked", _label(state), _label(state), reason, details)

    def complete(self, name: str, reason: str = "") -> RolloutState:
        """Cutover -> complete, only after the retention window since cutover."""
        before = self.store.get(name)
        if before.stage != Stage.CUTOVER:
            raise RolloutError(f"{name} is {before.stage}; complete needs cutover first")
        if before.halted:
            raise RolloutError(f"{name} is halted ({before.halt_reason}); resume it first")
        assert before.cutover_at is not None
        cutover_at = before.cutover_at.replace(tzinfo=before.cutover_at.tzinfo or dt.UTC)
        ends = cutover_at + dt.timedelta(seconds=self.plan.retention_s)
        if dt.datetime.now(dt.UTC) < ends:
            raise RolloutError(
                f"{name}: the old collection {before.old_ns} must be kept until "
                f"{ends.isoformat(timespec='seconds')} (retention_s={self.plan.retention_s:g} "
                "after cutover); run complete again then"
            )
        after = self._transition(
            before,
            "complete",
            reason,
            {"old_collection": before.old_ns, "note": "stop the reverse stream; drop old by hand"},
            stage=Stage.COMPLETE,
            halted=False,
        )
        rm.TRANSITIONS.labels(name, "complete").inc()
        self._export(after)
        return after

    # -- the loop ---------------------------------------------------------------
    def tick(self) -> None:
        """One evaluation of every migration: halt on breach, advance when due and healthy."""
        for m in self.plan.migrations:
            try:
                self._tick_one(m)
            except VersionConflictError as exc:
                log.warning("rollout.conflict", migration=m.name, error=str(exc))
            except RolloutError as exc:
                log.info("rollout.not_advanced", migration=m.name, reason=str(exc))

    def _tick_one(self, m: MigrationPlan) -> None:
        state = self.store.get(m.name)
        self._export(state)
        if state.stage == Stage.ROLLING_BACK:
            # A rollback blocked on the drain (streams behind, reverse compare not yet
            # clean) is retried every evaluation until it completes: one that started
            # by itself after fence breaches must also finish by itself.
            reason = (state.halt_reason or "rollback").removeprefix("rollback: ")
            self.rollback(m.name, reason, audit_blocked=False)
            return
        if state.stage in TERMINAL:
            return
        if state.stage == Stage.PLANNED:
            if self._due(state):
                self.advance(m.name, reason="schedule", state=state)
            return
        ev = self.evaluate(m.name)
        if ev.breaches:
            count = self._breaches_in_row.get(m.name, 0) + 1
            self._breaches_in_row[m.name] = count
            reason = "fence breached: " + "; ".join(map(str, ev.breaches))
            if not state.halted:
                state = self.halt(m.name, reason, revert=True, breaches=ev.breaches, state=state)
            if m.rollback_after_breaches and count >= m.rollback_after_breaches:
                self.rollback(m.name, f"{count} fence breaches in a row ({reason})")
            return
        self._breaches_in_row[m.name] = 0
        if ev.held:
            self._hold(m.name, state, ev)
        else:
            self._advance_if_due(m, self._unhold(m.name, state), ev)

    def _advance_if_due(self, m: MigrationPlan, state: RolloutState, ev: Evaluation) -> None:
        if state.halted or state.stage == Stage.CUTOVER or not self._due(state):
            return
        if not ev.verdict.ready:
            log.info("rollout.gate_not_ready", migration=m.name, reasons=ev.verdict.reasons)
            return
        # Re-evaluating inside advance() would double the compare cost; this
        # evaluation is seconds old and the CAS still refuses a concurrent change.
        self._advance_evaluated(m, state, ev)

    def _advance_evaluated(self, m: MigrationPlan, state: RolloutState, ev: Evaluation) -> None:
        self._check_reverse_stream(m, state)
        changes = self._next_step(m, state)
        after = self._transition(
            state, "advance", "schedule", ev.details(), **changes, hold_reason=None
        )
        rm.TRANSITIONS.labels(m.name, "advance").inc()
        self._export(after)
        log.info("rollout.advanced", migration=m.name, to=_label(after))

    def _due(self, state: RolloutState) -> bool:
        if self.plan.advance_every_s <= 0 or state.step_entered_at is None:
            return False
        entered = state.step_entered_at.replace(tzinfo=state.step_entered_at.tzinfo or dt.UTC)
        return (dt.datetime.now(dt.UTC) - entered).total_seconds() >= self.plan.advance_every_s

    def run(self, stop: StopFlag, health: HealthState | None = None) -> None:
        """Evaluate every ``evaluation_interval_s`` until stopped; MongoDB outages back off."""
        self.ensure_states()
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
                if health is not None:
                    health.beat("ok")
            except (PyMongoError, RetryableError) as exc:
                log.warning("rollout.tick_failed", error=str(exc))
                if health is not None:
                    # Alive but not ready (/healthz 200, /readyz 503): a liveness restart
                    # during a MongoDB outage would turn this back-off into a crash loop.
                    health.beat("backpressure", error=str(exc))
            stop.wait(max(0.0, self.plan.evaluation_interval_s - (time.monotonic() - started)))
        log.info("rollout.stopped", reason=stop.reason)

    # -- helpers ----------------------------------------------------------------
    def _transition(
        self,
        before: RolloutState,
        action: str,
        reason: str,
        details: dict[str, Any] | None = None,
        **changes: Any,
    ) -> RolloutState:
        """Compare-and-set the state, then append the transition to the audit trail.

        Why the journal: the state write and the audit append are two writes, and a
        controller killed between them would leave a transition nobody audited. The
        entry therefore travels inside the state's own compare-and-set (``journal``)
        and is appended under the id ``<migration>@<version>``; whoever next reads
        the state (:meth:`settle_journal`) appends it if it is missing, and the id
        makes a second append the same entry.
        """
        now = dt.datetime.now(dt.UTC)
        preview = dataclasses.replace(before, **changes)
        journal = {
            "action": action,
            "from": _label(before),
            "to": _label(preview),
            "reason": reason,
            "details": details or {},
            "operator": self.operator,
            "at": now.replace(microsecond=now.microsecond // 1000 * 1000),
            "seq": audit.next_seq(),
        }
        after = self.store.swap(before, self.operator, **changes, journal=journal)
        _failpoint("rollout.after_swap")
        self.settle_journal(after)
        return after

    def settle_journal(self, state: RolloutState) -> None:
        """Append the audit entry of the transition that produced ``state`` if it is missing."""
        j = state.journal
        if not j:
            return
        audit.record(
            self.client,
            self.settings.metadata_db,
            migration=state.migration,
            action=j["action"],
            operator=j["operator"],
            from_state=j["from"],
            to_state=j["to"],
            reason=j["reason"],
            details=j["details"],
            entry_id=f"{state.migration}@{state.version}",
            at=j["at"],
            seq=j.get("seq"),
        )

    def _audit(
        self,
        name: str,
        action: str,
        from_state: str | None,
        to_state: str | None,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        audit.record(
            self.client,
            self.settings.metadata_db,
            migration=name,
            action=action,
            operator=self.operator,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            details=details,
        )

    def _export(self, s: RolloutState) -> None:
        rm.HALTED.labels(s.migration).set(1 if s.halted else 0)
        rm.STAGE.labels(s.migration).set(stage_index(s.stage))
        rm.EXPOSURE.labels(s.migration).set(
            100.0 if s.read_path == "new" else (s.percentage if s.read_path == "split" else 0.0)
        )


def _failpoint(name: str) -> None:
    """Die here with SIGKILL when ``SM_FAILPOINT`` names this point (chaos tests only).

    How the tests put a kill -9 exactly between two writes that no timing can hit
    reliably; unset (always, in production) it costs one environment lookup.
    """
    if os.environ.get("SM_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _label(s: RolloutState) -> str:
    """``canary 5% (tier 1)``: stage plus exposure, as the audit trail shows it."""
    text = str(s.stage)
    if s.stage in {Stage.CANARY, Stage.RAMP, Stage.CUTOVER, Stage.ROLLING_BACK}:
        text += f" {s.percentage:g}%"
        if s.tenants_allow:
            text += f" +{len(s.tenants_allow)} tenants"
        if s.tier >= 0:
            text += f" (tier {s.tier})"
    if s.halted:
        text += " [halted]"
    return text
