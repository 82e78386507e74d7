"""The rollout section: stage, tier, halt, and the fences as the audit trail last recorded them."""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING, MongoClient

from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.rollout.audit import AUDIT_COLLECTION
from stream_migrator.rollout.state import StateStore
from stream_migrator.status.times import epoch, iso


def rollout_section(
    client: MongoClient[dict[str, Any]], settings: ReconcileSettings
) -> dict[str, Any]:
    s = settings
    state = StateStore(client, s.metadata_db).load(s.migration)
    if state is None:
        return {"available": True, "error": None, "found": False}
    return {
        "available": True,
        "error": None,
        "found": True,
        "stage": str(state.stage),
        "tier": state.tier,
        "percentage": state.percentage,
        "halted": state.halted,
        "halt_reason": state.halt_reason,
        "hold_reason": state.hold_reason,
        "read_path": state.read_path,
        "updated_at": iso(epoch(state.updated_at)),
        "version": state.version,
        "fences": fence_states(client, s.metadata_db, s.migration, state.halted),
    }


def fence_states(
    client: MongoClient[dict[str, Any]], metadata_db: str, migration: str, halted: bool
) -> dict[str, Any]:
    """The fences as the audit trail last recorded them: measured values and breaches.

    The controller keeps no fence state beside the rollout document; each evaluation
    it acts on is audited with ``details.measured``, and a breach with
    ``details.breaches`` (the limits live in the plan file).
    """
    audit = client[metadata_db][AUDIT_COLLECTION]
    order = [("at", DESCENDING), ("seq", DESCENDING)]
    measured = audit.find_one(
        {"migration": migration, "details.measured": {"$exists": True}}, sort=order
    )
    breach = audit.find_one({"migration": migration, "action": "fence_breach"}, sort=order)
    details = (measured or {}).get("details") or {}
    return {
        "evaluated_at": iso(epoch((measured or {}).get("at"))),
        "measured": details.get("measured"),
        "unmeasured": details.get("unmeasured") or [],
        "breaches": ((breach or {}).get("details") or {}).get("breaches") or [] if halted else [],
        "last_breach_at": iso(epoch((breach or {}).get("at"))),
    }
