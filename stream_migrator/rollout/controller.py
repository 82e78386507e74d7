"""The rollout controller: moves migrations through the stages while fences hold.

Every transition is a compare-and-set on the state document (see ``state.py``)
followed by an audit entry (``transitions.py``). The controller never writes data;
exposure is the router's business, the reverse stream (``reverse.py``) runs as its
own process. Fences are checked in ``evaluation.py``, each step's exposure comes
from ``exposure.py``, rollback runs in ``rollback.py``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from stream_migrator.errors import RetryableError
from stream_migrator.observability import HealthState, get_logger
from stream_migrator.rollout.errors import RolloutError, VersionConflictError
from stream_migrator.rollout.evaluation import Evaluation, MeasurementHistory, evaluate_migration
from stream_migrator.rollout.exposure import next_step, tier
from stream_migrator.rollout.fences import Breach
from stream_migrator.rollout.gate import Gate
from stream_migrator.rollout.leases import LeaseStore
from stream_migrator.rollout.plan import MigrationPlan, Plan
from stream_migrator.rollout.rollback import Rollback
from stream_migrator.rollout.stages import TERMINAL, Stage
from stream_migrator.rollout.state import RolloutState, StateStore
from stream_migrator.rollout.transitions import Transitions, export
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec

log = get_logger("rollout")

#: Drains the reverse stream and verifies the old side; returns (ok, details) for the audit.
Drainer = Callable[[Settings], tuple[bool, dict[str, Any]]]
#: Why the reverse stream is not ready to carry new-path writes back (None = ready).
ReverseProbe = Callable[[Settings], str | None]


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
        # Asked before the first step that lets applications write to new: with
        # rollback required, writes on new need a running reverse stream from the
        # first one on, or a rollback could not bring them back.
        self.reverse_probe = reverse_probe
        self.leases = LeaseStore(client, settings.metadata_db)
        self._transitions = Transitions(client, settings.metadata_db, self.store, operator)
        self._rollback = Rollback(
            self._transitions,
            self.leases,
            drain=None if drainer is None else lambda name: drainer(self._settings_of(name)),
            router_wait_s=router_wait_s,
        )
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
                self._transitions.audit(
                    m.name, "init", None, Stage.PLANNED, "state document created"
                )
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

    def settle_journal(self, state: RolloutState) -> None:
        """Append the audit entry of the transition that produced ``state`` if it is missing."""
        self._transitions.settle(state)

    # -- measurements -----------------------------------------------------------
    def evaluate(self, name: str) -> Evaluation:
        """Ask the gate, read the pipeline's measurements, check every fence."""
        m = self.plan.migration(name)
        return evaluate_migration(m, migration_settings(self.settings, m), self.gate, self.history)

    def _hold(self, name: str, state: RolloutState, ev: Evaluation) -> RolloutState:
        """Record (once per distinct cause) that fences without a measurement hold the stage."""
        reason = ev.hold_reason
        if state.hold_reason == reason:
            return state
        details = {**ev.details(), "missing": ev.missing}
        after = self._transitions.swap(state, "fence_hold", reason, details, hold_reason=reason)
        log.warning("rollout.held", migration=name, missing=ev.missing)
        return after

    def _unhold(self, state: RolloutState) -> RolloutState:
        if state.hold_reason is None:
            return state
        return self._transitions.swap(
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
        return self._step_forward(m, before, reason, details)

    def _step_forward(
        self, m: MigrationPlan, before: RolloutState, reason: str, details: dict[str, Any]
    ) -> RolloutState:
        self._check_reverse_stream(m, before)
        return self._transitions.step(
            before,
            "advance",
            reason,
            details,
            counted_as="advance",
            event="rollout.advanced",
            **next_step(m, before, self.plan.ramp_from_percent),
            hold_reason=None,
        )

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
            changes.update(tier(m, target, self.plan.ramp_from_percent))
            changes["last_safe_tier"] = max(-1, target - 1)
            if target < 0:
                changes["stage"] = Stage.CANARY
        details = {
            "breaches": [vars(b) for b in breaches or []],
            "exposure_before": before.percentage,
        }
        return self._transitions.step(
            before,
            "fence_breach" if breaches else "halt",
            reason,
            details,
            counted_as="halt",
            event="rollout.halted",
            warn=True,
            logged={"reason": reason},
            **changes,
        )

    def resume(self, name: str, reason: str = "") -> RolloutState:
        """Clear the halt; exposure stays where the halt left it."""
        before = self.store.get(name)
        if not before.halted:
            raise RolloutError(f"{name} is not halted")
        if before.stage == Stage.ROLLING_BACK:
            raise RolloutError(f"{name} is rolling back; finish it with `rollout rollback` again")
        return self._transitions.step(
            before, "resume", reason, counted_as="resume", halted=False, halt_reason=None
        )

    def rollback(self, name: str, reason: str, *, audit_blocked: bool = True) -> RolloutState:
        """Halt, drain and verify, route all to old, wait for every router, verify again.

        Each step is a state the command can be re-run from (see
        :mod:`stream_migrator.rollout.rollback`); ``audit_blocked=False`` (a running
        controller's retries) writes no ``rollback_blocked`` entry.
        """
        return self._rollback.run(name, reason, audit_blocked=audit_blocked)

    def _settings_of(self, name: str) -> Settings:
        return migration_settings(self.settings, self.plan.migration(name))

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
        return self._transitions.step(
            before,
            "complete",
            reason,
            {"old_collection": before.old_ns, "note": "stop the reverse stream; drop old by hand"},
            counted_as="complete",
            stage=Stage.COMPLETE,
            halted=False,
        )

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
        export(state)
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
            self._advance_if_due(m, self._unhold(state), ev)

    def _advance_if_due(self, m: MigrationPlan, state: RolloutState, ev: Evaluation) -> None:
        if state.halted or state.stage == Stage.CUTOVER or not self._due(state):
            return
        if not ev.verdict.ready:
            log.info("rollout.gate_not_ready", migration=m.name, reasons=ev.verdict.reasons)
            return
        # Re-evaluating inside advance() would double the compare cost; this
        # evaluation is seconds old and the CAS still refuses a concurrent change.
        self._step_forward(m, state, "schedule", ev.details())

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
