"""Rollback: halt, drain and verify, route all to old, wait for every router, verify again.

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

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stream_migrator.rollout.errors import RolloutError
from stream_migrator.rollout.leases import AckReport, LeaseStore, LeaseWatch
from stream_migrator.rollout.stages import WRITES_ON_NEW, Stage, can_roll_back
from stream_migrator.rollout.state import RolloutState
from stream_migrator.rollout.transitions import Transitions, label

#: Drains the reverse stream of the named migration and verifies its old side;
#: returns (ok, details) for the audit.
Drain = Callable[[str], tuple[bool, dict[str, Any]]]


class Rollback:
    """Runs (or resumes) the rollback of one migration at a time; see the module docstring."""

    def __init__(
        self,
        transitions: Transitions,
        leases: LeaseStore,
        *,
        drain: Drain | None,
        router_wait_s: float | None,
    ) -> None:
        self._transitions = transitions
        self._store = transitions.store
        self._leases = leases
        self._drain = drain
        # Rollback waits for every router to acknowledge the old-only state (or to let
        # its lease expire): at most this long per attempt (None = as long as the
        # pending routers' leases need), then it stays in rolling_back and is retried.
        self._router_wait_s = router_wait_s
        self._lease_watch = LeaseWatch()

    def run(self, name: str, reason: str, *, audit_blocked: bool = True) -> RolloutState:
        before = self._store.get(name)
        if not can_roll_back(before.stage):
            raise RolloutError(f"{name} is {before.stage}; rollback is legal only before complete")
        state = before
        if before.stage != Stage.ROLLING_BACK:
            state = self._transitions.swap(
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
        acks: AckReport | None = None
        if came_from in WRITES_ON_NEW:
            if self._drain is None:
                raise RolloutError(
                    f"{name} was at {came_from}: writes may be on the new collection, so the "
                    "reverse stream must be drained and verified first, and no drainer is set"
                )
            if "old_only_version" not in state.extra:
                ok, drained = self._drain(name)
                if not ok:
                    self._blocked(state, reason, {**details, **drained}, audit_blocked)
                    raise RolloutError(
                        f"{name} stays in rolling_back: the old side is not verified yet "
                        f"({drained}); is the reverse stream running? re-run `rollout "
                        "rollback` when it has drained"
                    )
                state = self._route_old(state, reason, drained)
            version = int(state.extra["old_only_version"])
            acks = self._await_routers(name, version)
            details.update(acks.summary())
            if acks.pending:
                self._blocked(state, reason, details, audit_blocked)
                raise RolloutError(
                    f"{name} stays in rolling_back: router(s) "
                    f"{', '.join(lease.describe() for lease in acks.pending)} have not "
                    f"acknowledged the old-only state (version {version}) and their leases "
                    "have not expired; they may still write to new. Re-run `rollout rollback` "
                    f"(it waits up to their lease); see {self._leases.coll.full_name}"
                )
            # Now nothing routes writes to new: a last drain and compare catches every
            # write that a router made there before it acknowledged.
            ok, drained = self._drain(name)
            details.update(drained)
            if not ok:
                self._blocked(state, reason, details, audit_blocked)
                raise RolloutError(
                    f"{name} stays in rolling_back (routing old): the final verification "
                    f"after every router acknowledged failed ({drained}); is the reverse "
                    "stream running? re-run `rollout rollback` when it has drained"
                )
        after = self._transitions.step(
            state,
            "rollback",
            reason,
            details,
            counted_as="rollback",
            event="rollout.rolled_back",
            warn=True,
            logged={"reason": reason},
            stage=Stage.ROLLED_BACK,
            tier=-1,
            last_safe_tier=-1,
            percentage=0.0,
            tenants_allow=(),
            halt_reason=f"rolled back: {reason}",
        )
        if acks is not None:
            self._leases.forget(acks.expired)  # crashed routers: the next rollback need not wait
        return after

    def _route_old(self, state: RolloutState, reason: str, drained: dict[str, Any]) -> RolloutState:
        """Still rolling back, every key on old; remember the version routers must acknowledge."""
        return self._transitions.step(
            state,
            "rollback_route_old",
            reason,
            drained,
            counted_as="rollback_route_old",
            event="rollout.routing_old",
            warn=True,
            logged={"version": state.version + 1},
            tier=-1,
            last_safe_tier=-1,
            percentage=0.0,
            tenants_allow=(),
            extra={**state.extra, "old_only_version": state.version + 1},
        )

    def _await_routers(self, name: str, version: int) -> AckReport:
        """Poll the router leases until none is pending, or the wait is over."""
        started = time.monotonic()
        while True:
            report = self._lease_watch.classify(self._leases.of(name), version)
            if not report.pending:
                return report
            needed = max(self._lease_watch.expiry_after(lease) for lease in report.pending)
            wait = needed if self._router_wait_s is None else min(needed, self._router_wait_s)
            if time.monotonic() - started >= wait:
                return report
            time.sleep(0.2)

    def _blocked(
        self, state: RolloutState, reason: str, details: dict[str, Any], audit_blocked: bool
    ) -> None:
        if audit_blocked:
            self._transitions.audit(
                state.migration, "rollback_blocked", label(state), label(state), reason, details
            )
