"""Rollout: plan, state and flags, router SDK, fences, controller, reverse stream, audit.

The re-exports load on first use (see :mod:`stream_migrator._lazy`): the router SDK
imports this package and must not pay for the controller.
"""

from typing import TYPE_CHECKING

from stream_migrator._lazy import lazy_exports

if TYPE_CHECKING:
    from stream_migrator.rollout.audit import operator_identity, record
    from stream_migrator.rollout.controller import Controller, migration_settings
    from stream_migrator.rollout.errors import PlanError, RolloutError, VersionConflictError
    from stream_migrator.rollout.gate import DEFAULT_GATE, Gate, GateVerdict, compare_gate
    from stream_migrator.rollout.plan import Fences, MigrationPlan, Plan, Tier, load_plan
    from stream_migrator.rollout.stages import Stage
    from stream_migrator.rollout.state import RolloutState, StateStore

_EXPORTS = {
    "operator_identity": "stream_migrator.rollout.audit",
    "record": "stream_migrator.rollout.audit",
    "Controller": "stream_migrator.rollout.controller",
    "migration_settings": "stream_migrator.rollout.controller",
    "PlanError": "stream_migrator.rollout.errors",
    "RolloutError": "stream_migrator.rollout.errors",
    "VersionConflictError": "stream_migrator.rollout.errors",
    "DEFAULT_GATE": "stream_migrator.rollout.gate",
    "Gate": "stream_migrator.rollout.gate",
    "GateVerdict": "stream_migrator.rollout.gate",
    "compare_gate": "stream_migrator.rollout.gate",
    "Fences": "stream_migrator.rollout.plan",
    "MigrationPlan": "stream_migrator.rollout.plan",
    "Plan": "stream_migrator.rollout.plan",
    "Tier": "stream_migrator.rollout.plan",
    "load_plan": "stream_migrator.rollout.plan",
    "Stage": "stream_migrator.rollout.stages",
    "RolloutState": "stream_migrator.rollout.state",
    "StateStore": "stream_migrator.rollout.state",
}
__all__ = [
    "DEFAULT_GATE",
    "Controller",
    "Fences",
    "Gate",
    "GateVerdict",
    "MigrationPlan",
    "Plan",
    "PlanError",
    "RolloutError",
    "RolloutState",
    "Stage",
    "StateStore",
    "Tier",
    "VersionConflictError",
    "compare_gate",
    "load_plan",
    "migration_settings",
    "operator_identity",
    "record",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
