"""Prometheus metrics of the rollout controller, labelled by migration."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

HALTED = Gauge(
    "sm_rollout_halted",
    "1 while the rollout is halted (a fence breached or an operator halted it); alert on it.",
    ["migration"],
)
STAGE = Gauge(
    "sm_rollout_stage",
    "Stage index: 0 planned, 1 shadow, 2 verify, 3 canary, 4 ramp, 5 cutover, 6 complete, "
    "-1 rolling back or rolled back.",
    ["migration"],
)
EXPOSURE = Gauge(
    "sm_rollout_exposure_percent", "Share of keys routed to the new collection.", ["migration"]
)
FENCE_VALUE = Gauge(
    "sm_rollout_fence_value", "Last measured value of each fence.", ["migration", "fence"]
)
FENCE_BREACHES = Counter(
    "sm_rollout_fence_breaches_total", "Fence evaluations that breached.", ["migration", "fence"]
)
TRANSITIONS = Counter(
    "sm_rollout_transitions_total",
    "State changes written (action: advance, halt, resume, rollback, complete).",
    ["migration", "action"],
)
