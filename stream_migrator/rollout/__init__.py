"""Rollout: plan, state and flags, router SDK, fences, controller, reverse stream, audit."""

from stream_migrator.rollout.audit import operator_identity, record
from stream_migrator.rollout.controller import Controller, migration_settings
from stream_migrator.rollout.errors import PlanError, RolloutError, VersionConflictError
from stream_migrator.rollout.gate import DEFAULT_GATE, Gate, GateVerdict, compare_gate
from stream_migrator.rollout.plan import Fences, MigrationPlan, Plan, Tier, load_plan
from stream_migrator.rollout.stages import Stage
from stream_migrator.rollout.state import RolloutState, StateStore

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
