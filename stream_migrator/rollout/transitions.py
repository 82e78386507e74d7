"""How the controller writes a transition: compare-and-set, audit entry, metrics, log.

Every state change goes through :meth:`Transitions.swap` (the state's
compare-and-set carrying its own audit entry); the operator-visible ones through
:meth:`Transitions.step`, which also counts, exports and logs them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
from typing import Any

from pymongo import MongoClient

from stream_migrator.observability import get_logger
from stream_migrator.rollout import audit
from stream_migrator.rollout import metrics as rm
from stream_migrator.rollout.stages import Stage, stage_index
from stream_migrator.rollout.state import RolloutState, StateStore

log = get_logger("rollout")


class Transitions:
    """Writes the state changes of one operator's controller and their audit entries."""

    def __init__(
        self,
        client: MongoClient[dict[str, Any]],
        metadata_db: str,
        store: StateStore,
        operator: str,
    ) -> None:
        self.client = client
        self.metadata_db = metadata_db
        self.store = store
        self.operator = operator

    def step(
        self,
        before: RolloutState,
        action: str,
        reason: str,
        details: dict[str, Any] | None = None,
        *,
        counted_as: str,
        event: str | None = None,
        warn: bool = False,
        logged: dict[str, Any] | None = None,
        **changes: Any,
    ) -> RolloutState:
        """:meth:`swap`, then count it as ``counted_as``, export the gauges, log ``event``."""
        after = self.swap(before, action, reason, details, **changes)
        rm.TRANSITIONS.labels(after.migration, counted_as).inc()
        export(after)
        if event is not None:
            emit = log.warning if warn else log.info
            emit(event, migration=after.migration, to=label(after), **(logged or {}))
        return after

    def swap(
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
        the state (:meth:`settle`) appends it if it is missing, and the id makes a
        second append the same entry.
        """
        now = dt.datetime.now(dt.UTC)
        preview = dataclasses.replace(before, **changes)
        journal = {
            "action": action,
            "from": label(before),
            "to": label(preview),
            "reason": reason,
            "details": details or {},
            "operator": self.operator,
            "at": now.replace(microsecond=now.microsecond // 1000 * 1000),
            "seq": audit.next_seq(),
        }
        after = self.store.swap(before, self.operator, **changes, journal=journal)
        _failpoint("rollout.after_swap")
        self.settle(after)
        return after

    def settle(self, state: RolloutState) -> None:
        """Append the audit entry of the transition that produced ``state`` if it is missing."""
        j = state.journal
        if not j:
            return
        audit.record(
            self.client,
            self.metadata_db,
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

    def audit(
        self,
        name: str,
        action: str,
        from_state: str | None,
        to_state: str | None,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """An audit entry for something that is not a state change (init, a blocked step)."""
        audit.record(
            self.client,
            self.metadata_db,
            migration=name,
            action=action,
            operator=self.operator,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            details=details,
        )


def export(s: RolloutState) -> None:
    """Set the migration's halted, stage and exposure gauges from ``s``."""
    rm.HALTED.labels(s.migration).set(1 if s.halted else 0)
    rm.STAGE.labels(s.migration).set(stage_index(s.stage))
    rm.EXPOSURE.labels(s.migration).set(
        100.0 if s.read_path == "new" else (s.percentage if s.read_path == "split" else 0.0)
    )


def label(s: RolloutState) -> str:
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


def _failpoint(name: str) -> None:
    """Die here with SIGKILL when ``SM_FAILPOINT`` names this point (chaos tests only).

    How the tests put a kill -9 exactly between two writes that no timing can hit
    reliably; unset (always, in production) it costs one environment lookup.
    """
    if os.environ.get("SM_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
