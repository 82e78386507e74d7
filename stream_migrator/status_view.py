"""The human form of the status document (``stream-migrator status`` without ``--json``).

Every figure printed here is read from the document :func:`stream_migrator.status.
progress_document` builds, so the table and ``--json`` never disagree.
"""

from __future__ import annotations

from typing import Any


def render(doc: dict[str, Any]) -> str:
    """A compact table: one block per stage, then ``can_cutover`` and its reasons."""
    lines = [
        f"migration   {doc['migration']}  {doc['source']} -> {doc['target']}  "
        f"at {doc['measured_at']}"
    ]
    lines += _capture(doc["capture"])
    lines += _transform(doc["transform"])
    lines += _quarantine(doc["quarantine"])
    lines += _reconcile(doc["reconcile"])
    lines += _rollout(doc["rollout"])
    lines.append(f"can_cutover {'true' if doc['can_cutover'] else 'false'}")
    lines += [f"  - {reason}" for reason in doc["cutover_blockers"]]
    return "\n".join(lines)


def _unavailable(name: str, section: dict[str, Any]) -> list[str] | None:
    if section.get("available"):
        return None
    return [f"{name:11} unavailable: {section.get('error')}"]


def _capture(c: dict[str, Any]) -> list[str]:
    down = _unavailable("capture", c)
    if down:
        return down
    if c["phase"] == "not_started":
        return [f"capture     not started: {c['note']}"]
    snap, stream = c["snapshot"], c["streaming"]
    out = []
    if c["phase"] == "stopped":
        stopped = c.get("stopped") or {}
        out.append(
            f"capture     STOPPED at a '{stopped.get('reason')}' event ({stopped.get('at')})"
        )
    if snap["done"]:
        stopped = c["phase"] == "stopped"
        out.append(
            "            snapshot done" if stopped else "capture     streaming (snapshot done)"
        )
    else:
        copied = "?" if snap["copied"] is None else str(snap["copied"])
        share = "?" if snap["percent"] is None else f"{snap['percent']:g}%"
        rate = "?" if snap["rate_per_s"] is None else f"{snap['rate_per_s']:g} docs/s"
        eta = _seconds(snap["eta_s"])
        out.append(
            f"capture     snapshot  {copied} of ~{snap['estimated_total']} ({share}, approximate)"
            f"  {rate}  ETA {eta}"
        )
        if snap.get("ranges"):
            out.append(f"            ranges {snap['ranges_done']}/{snap['ranges']} done")
    age = _seconds(stream["resume_token_age_s"])
    lag = (
        _seconds(stream["capture_lag_s"])
        if stream["capture_lag_s"] is not None
        else f"unknown ({stream['capture_lag_error'] or 'oplog not read'})"
    )
    if c["phase"] == "snapshot":
        # No resume token while copying: the age is the last checkpoint's.
        out.append(f"            last checkpoint {age} ago  capture lag {lag}")
    else:
        out.append(
            f"            resume token age {age} ({stream['resume_token_age_basis']})  "
            f"capture lag {lag}"
        )
    return out


def _transform(t: dict[str, Any]) -> list[str]:
    down = _unavailable("transform", t)
    if down:
        return down
    members = "?" if t["members"] is None else str(t["members"])
    rate = "?" if t["applied_per_s"] is None else f"{t['applied_per_s']:g} events/s"
    drain = _seconds(t["drain_eta_s"])
    if t["drain_eta_s"] is None and t["drain_per_s"] is not None and t["drain_per_s"] <= 0:
        drain = "none (not draining)"
    out = [
        f"transform   lag {t['lag_events']} events, {t['lag_seconds']:.1f} s  members {members}  "
        f"applied {rate}  drain ETA {drain}"
    ]
    out += [
        f"            partition {p['partition']:<3} produced {p['produced']:<8} "
        f"committed {p['committed']:<8} lag {p['lag_events']} events, {p['lag_seconds']:.1f} s"
        for p in t["partitions"]
    ]
    return out


def _quarantine(q: dict[str, Any]) -> list[str]:
    down = _unavailable("quarantine", q)
    if down:
        return down
    if not q["count"]:
        return [f"quarantine  0 events in {q['topic']}"]
    stages = ", ".join(f"{k} {n}" for k, n in q["by_stage"].items())
    newest = q["newest"] or {}
    reason = str(newest.get("reason", ""))
    reason = reason if len(reason) <= 100 else reason[:97] + "..."
    return [
        f"quarantine  {q['count']} event{'' if q['count'] == 1 else 's'} ({stages})",
        f"            newest {newest.get('position')} _id {newest.get('doc_id')}: {reason}",
    ]


def _reconcile(r: dict[str, Any]) -> list[str]:
    down = _unavailable("reconcile", r)
    if down:
        return down
    if not r.get("found"):
        return ["reconcile   none has run"]
    if r["state"] != "done":
        return [f"reconcile   {r['state']} (run {r['run_id']}, started {r['started_at']})"]
    ratio = "?" if r["divergence_ratio"] is None else f"{r['divergence_ratio']:g}"
    out = [
        f"reconcile   {r['verdict']}  divergence {ratio} ({r['divergent']} documents)  "
        f"{r['mode']} run {r['run_id']} finished {r['finished_at']} "
        f"({_seconds(r['age_s'])} ago)"
    ]
    out += [f"            - {reason}" for reason in r["reasons"]]
    return out


def _rollout(r: dict[str, Any]) -> list[str]:
    down = _unavailable("rollout", r)
    if down:
        return down
    if not r.get("found"):
        return ["rollout     none"]
    halted = f"  HALTED: {r['halt_reason']}" if r["halted"] else ""
    out = [f"rollout     {r['stage']} tier {r['tier']} {r['percentage']:g}%{halted}"]
    if r.get("hold_reason"):
        out.append(f"            held: {r['hold_reason']}")
    fences = r["fences"]
    if fences["measured"]:
        shown = ", ".join(f"{k} {v:g}" for k, v in fences["measured"].items() if v is not None)
        out.append(f"            fences measured {fences['evaluated_at']}: {shown or '-'}")
    for b in fences["breaches"]:
        out.append(f"            breach {b.get('fence')} {b.get('value'):g} > {b.get('limit'):g}")
    return out


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value < 120:
        return f"{value:g}s"
    if value < 7200:
        return f"{value / 60:.1f}min"
    return f"{value / 3600:.1f}h"
