"""The rollout stages and the exposure each one means (pure logic, no I/O)."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where a migration stands. ``rolled_back`` is terminal like ``complete``."""

    PLANNED = "planned"  # nothing runs
    SHADOW = "shadow"  # pipeline running, nobody reads new
    VERIFY = "verify"  # waiting for the reconciler gate
    CANARY = "canary"  # first tiers read and write new
    RAMP = "ramp"  # wider tiers read and write new
    CUTOVER = "cutover"  # everyone on new; the reverse stream keeps old current
    COMPLETE = "complete"  # old retired (after the retention window)
    ROLLING_BACK = "rolling_back"  # halted, reverse stream draining, old being verified
    ROLLED_BACK = "rolled_back"  # everyone on old again


ORDER = (
    Stage.PLANNED,
    Stage.SHADOW,
    Stage.VERIFY,
    Stage.CANARY,
    Stage.RAMP,
    Stage.CUTOVER,
    Stage.COMPLETE,
)
TERMINAL = frozenset({Stage.COMPLETE, Stage.ROLLED_BACK})
#: Stages in which application writes may land on the new collection.
WRITES_ON_NEW = frozenset({Stage.CANARY, Stage.RAMP, Stage.CUTOVER})


def stage_index(stage: Stage) -> int:
    """Position in the forward order; rollback stages sort before planned (-1)."""
    return ORDER.index(stage) if stage in ORDER else -1


def can_roll_back(stage: Stage) -> bool:
    """Rollback is legal from every stage before complete (and resumable while rolling back)."""
    return stage not in TERMINAL


def tier_stage(percent: float, ramp_from_percent: float) -> Stage:
    """A tier below ``ramp_from_percent`` is a canary tier; from there on it is ramp."""
    return Stage.CANARY if percent < ramp_from_percent else Stage.RAMP
