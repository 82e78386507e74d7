"""The state changes of a step: the next stage, tier, percentage and tenants (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from stream_migrator.rollout.plan import MigrationPlan
from stream_migrator.rollout.stages import ORDER, Stage, stage_index, tier_stage
from stream_migrator.rollout.state import RolloutState


def next_step(m: MigrationPlan, s: RolloutState, ramp_from_percent: float) -> dict[str, Any]:
    """The changes that advance ``s`` one step (the caller has checked it may advance)."""
    now = dt.datetime.now(dt.UTC)
    if s.stage in {Stage.PLANNED, Stage.SHADOW}:
        return {"stage": ORDER[stage_index(s.stage) + 1], "step_entered_at": now}
    if s.stage == Stage.VERIFY:
        return {**tier(m, 0, ramp_from_percent), "last_safe_tier": -1, "step_entered_at": now}
    # canary / ramp: next tier, or cutover after the last one
    if s.tier + 1 < len(m.tiers):
        return {
            **tier(m, s.tier + 1, ramp_from_percent),
            "last_safe_tier": s.tier,
            "step_entered_at": now,
        }
    return {
        "stage": Stage.CUTOVER,
        "last_safe_tier": s.tier,
        "percentage": 100.0,
        "cutover_at": now,
        "step_entered_at": now,
    }


def tier(m: MigrationPlan, index: int, ramp_from_percent: float) -> dict[str, Any]:
    """Exposure of tier ``index`` (-1 = none): its percentage and every tenant so far."""
    if index < 0:
        return {"tier": -1, "percentage": 0.0, "tenants_allow": ()}
    t = m.tiers[index]
    tenants: list[str] = []
    for earlier in m.tiers[: index + 1]:
        tenants.extend(x for x in earlier.tenants if x not in tenants)
    return {
        "tier": index,
        "stage": tier_stage(t.percent, ramp_from_percent),
        "percentage": t.percent,
        "tenants_allow": tuple(tenants),
    }
