"""The transform section (the group's lag per partition, drain rate) and the quarantine section."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stream_migrator.kafka import group_members
from stream_migrator.reconcile.lag import LagReport
from stream_migrator.reconcile.settings import ReconcileSettings
from stream_migrator.status.rates import Rates
from stream_migrator.transform.quarantine import read_quarantine


def transform_section(
    settings: ReconcileSettings, lag: LagReport, rates: Rates, timeout: float
) -> dict[str, Any]:
    s = settings
    figures = lag.to_json()
    out: dict[str, Any] = {
        "available": lag.known,
        "error": lag.error,
        "group": s.consumer_group,
        "topic": s.changes_topic,
        "lag_events": figures["events"] if lag.known else None,
        "lag_seconds": figures["seconds"] if lag.known else None,
        "partitions": [
            {
                "partition": p["partition"],
                "produced": p["produced"],
                "committed": p["committed"],
                "lag_events": p["events"],
                "lag_seconds": p["seconds"],
            }
            for p in figures["partitions"]
        ],
        "applied_per_s": _round(rates.committed_per_s),
        "drain_per_s": _round(rates.drain_per_s),
        "drain_eta_s": None,
        "members": group_members(
            s.kafka_bootstrap, s.consumer_group, timeout, security=s.kafka_client
        ),
    }
    if lag.known:
        if lag.events == 0:
            out["drain_eta_s"] = 0.0
        elif rates.drain_per_s is not None and rates.drain_per_s > 0:
            out["drain_eta_s"] = round(lag.events / rates.drain_per_s, 1)
    return out


def quarantine_section(settings: ReconcileSettings, timeout: float) -> dict[str, Any]:
    s = settings
    events = read_quarantine(
        s.kafka_bootstrap, s.quarantine_topic, timeout=timeout, security=s.kafka_client
    )
    by_stage = Counter(e.stage for e in events)
    newest = None
    if events:
        # The quarantine topic has one partition: the highest offset is the newest.
        e = max(events, key=lambda q: (q.offset, q.partition))
        newest = {
            "position": e.position,
            "stage": e.stage,
            "reason": e.reason,
            "doc_id": None if e.doc_id() is None else str(e.doc_id()),
        }
    return {
        "available": True,
        "error": None,
        "topic": s.quarantine_topic,
        "count": len(events),
        "by_stage": dict(sorted(by_stage.items())),
        "newest": newest,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
