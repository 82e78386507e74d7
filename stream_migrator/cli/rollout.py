"""``stream-migrator plan|rollout|audit``: the rollout controller's commands."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from bson import json_util

from stream_migrator.rollout.plan import Plan, load_plan, parse_plan, render, validate
from stream_migrator.settings import Settings

_ACTIONS = ("status", "advance", "halt", "resume", "rollback", "complete", "run", "reverse")


def register(sub: Any, add_settings_flags: Any, settings_of: Any) -> None:
    """Add ``plan``, ``rollout`` and ``audit`` to the top-level parser."""
    p = sub.add_parser("plan", help="validate or show a rollout plan file")
    p.add_argument("action", choices=["validate", "show"])
    p.add_argument("plan_file", metavar="PLAN", help="the plan (TOML)")
    p.add_argument(
        "--allow-hooks",
        action="store_true",
        default=None,
        help="let the specs import their Python hooks (env SM_ALLOW_HOOKS; SM_HOOKS_ALLOWED)",
    )
    p.set_defaults(func=lambda a: _cmd_plan(a, settings_of(a)))

    p = sub.add_parser("rollout", help="stage a migration's exposure: " + "|".join(_ACTIONS))
    p.add_argument("action", choices=_ACTIONS)
    p.add_argument("plan_file", metavar="PLAN", help="the plan (TOML)")
    p.add_argument(
        "name",
        metavar="MIGRATION",
        nargs="?",
        help="which migration (default: the plan's only one)",
    )
    p.add_argument("--reason", default="", help="why, for the audit trail")
    p.add_argument("--operator", default=None, help="who, for the audit trail (env SM_OPERATOR)")
    p.add_argument(
        "--revert", action="store_true", help="halt: also put exposure back to the last safe tier"
    )
    add_settings_flags(p)
    p.set_defaults(func=lambda a: _cmd_rollout(a, settings_of(a)))

    p = sub.add_parser("audit", help="print a migration's audit trail")
    p.add_argument("name", metavar="MIGRATION")
    p.add_argument("--json", action="store_true", help="one JSON document per line")
    add_settings_flags(p)
    p.set_defaults(func=lambda a: _cmd_audit(a, settings_of(a)))


def _cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    plan = parse_plan(args.plan_file)
    problems = validate(plan, settings.hook_policy)
    if problems:
        print(f"{args.plan_file}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 2
    if args.action == "validate":
        print(f"{args.plan_file}: OK ({len(plan.migrations)} migrations)")
    else:
        print(render(plan))
    return 0


def _pick(plan: Plan, name: str | None) -> str:
    if name:
        return plan.migration(name).name
    if len(plan.migrations) == 1:
        return plan.migrations[0].name
    from stream_migrator.rollout.errors import PlanError

    raise PlanError(
        f"plan {plan.name!r} has {len(plan.migrations)} migrations; name one: "
        + ", ".join(m.name for m in plan.migrations)
    )


def _cmd_rollout(args: argparse.Namespace, base: Settings) -> int:
    from stream_migrator.app import run_reverse, run_rollout, stop_on_signals
    from stream_migrator.mongo import connect
    from stream_migrator.observability import configure_logging
    from stream_migrator.rollout.audit import operator_identity
    from stream_migrator.rollout.controller import Controller, migration_settings
    from stream_migrator.rollout.gate import DEFAULT_GATE
    from stream_migrator.rollout.reverse import drain_and_verify, reverse_stream_problem
    from stream_migrator.rollout.settings import RolloutSettings

    settings = RolloutSettings(**{**base.model_dump(), "mongo_uri": base.mongo_uri})
    configure_logging(settings.log_level)
    plan = load_plan(args.plan_file, settings.hook_policy)
    operator = operator_identity(args.operator or settings.operator)
    client = connect(settings.mongo_uri.get_secret_value(), app="rollout")
    timeout = settings.drain_timeout_s
    controller = Controller(
        plan,
        client,
        settings,
        DEFAULT_GATE,
        operator,
        drainer=lambda s: drain_and_verify(s, timeout_s=timeout),
        reverse_probe=reverse_stream_problem,
    )
    try:
        if args.action == "run":
            run_rollout(settings, controller, stop_on_signals(), plan_file=args.plan_file)
            return 0
        controller.ensure_states()
        name = _pick(plan, args.name)
        if args.action == "reverse":
            return run_reverse(
                migration_settings(settings, plan.migration(name)), stop_on_signals()
            )
        reason = args.reason
        if args.action == "advance":
            state = controller.advance(name, reason=reason)
        elif args.action == "halt":
            state = controller.halt(name, reason or "operator halt", revert=args.revert)
        elif args.action == "resume":
            state = controller.resume(name, reason)
        elif args.action == "rollback":
            state = controller.rollback(name, reason or "operator rollback")
        elif args.action == "complete":
            state = controller.complete(name, reason)
        else:
            _status(controller, migration_settings(settings, plan.migration(name)))
            return 0
    finally:
        client.close()
    _print_state(state)
    return 0


def _status(controller: Any, s: Settings) -> None:
    """The state document, the routers' leases and (rollback required) the reverse stream."""
    from stream_migrator.rollout.reverse import reverse_stream_problem

    state = controller.status(s.migration)
    leases = controller.leases.of(s.migration)
    acked = sum(lease.acked_version >= state.version for lease in leases)
    routers = f"{len(leases)} with a lease, {acked} on version {state.version}"
    reverse = None
    if controller.plan.migration(s.migration).rollback_required:
        problem = reverse_stream_problem(s)
        reverse = f"not ready: {problem}" if problem else "ready"
    _print_state(state, reverse=reverse, routers=routers)


def _print_state(s: Any, *, reverse: str | None = None, routers: str | None = None) -> None:
    rows = [
        ("migration", s.migration),
        ("stage", str(s.stage) + ("  [HALTED: " + str(s.halt_reason) + "]" if s.halted else "")),
        ("tier", s.tier),
        ("percentage", f"{s.percentage:g}%"),
        ("tenants allowed", ", ".join(s.tenants_allow) or "-"),
        ("tenants denied", ", ".join(s.tenants_deny) or "-"),
        ("read path", s.read_path),
        ("write path", s.write_path),
        ("old / new", f"{s.old_ns} ({s.old_schema}) / {s.new_ns} ({s.new_schema})"),
        ("updated", f"{s.updated_at} by {s.updated_by} (version {s.version})"),
    ]
    if s.hold_reason:
        rows.insert(2, ("held", s.hold_reason))
    if routers is not None:
        rows.append(("routers", routers))
    if reverse is not None:
        rows.append(("reverse stream", reverse))
    for key, value in rows:
        print(f"{key:16} {value}")


def _cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from stream_migrator.mongo import connect
    from stream_migrator.rollout.audit import entries

    client = connect(settings.mongo_uri.get_secret_value(), app="audit")
    try:
        rows = entries(client, settings.metadata_db, args.name)
    finally:
        client.close()
    if not rows:
        print(f"no audit entries for {args.name} in {settings.metadata_db}.audit")
        return 1
    for e in rows:
        if args.json:
            e.pop("_id", None)
            print(json_util.dumps(e, json_options=json_util.RELAXED_JSON_OPTIONS))
            continue
        move = f"{e.get('from') or '-'} -> {e.get('to') or '-'}"
        details = e.get("details") or {}
        extra = ""
        with contextlib.suppress(TypeError, ValueError):
            extra = json_util.dumps(details) if details else ""
        at = e["at"].isoformat(timespec="seconds")
        print(f"{at}  {e['operator']:12} {e['action']:16} {move:40} {e.get('reason', '')}")
        if extra:
            print(f"{'':22}{extra[:200]}")
    return 0
