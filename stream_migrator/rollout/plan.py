"""The migration plan: a TOML (or YAML) file listing migrations, what they touch, tiers, fences.

``stream-migrator plan validate PLAN`` reports every problem at once (cycles,
unknown collections or fields, a spec without inverse where rollback is
required); ``plan show PLAN`` prints the migration matrix and the run order.
An example lives in ``stream_migrator/rollout/examples/plan.toml``. A file
ending in ``.yaml``/``.yml`` is read as YAML with the same structure (the spec
files are YAML, so a team may keep both in one format).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stream_migrator.errors import ConfigError
from stream_migrator.hook_policy import NO_HOOKS, HookPolicy
from stream_migrator.rollout.errors import PlanError
from stream_migrator.spec import MigrationSpec, get_spec

OnMissing = Literal["hold", "skip"]
_ON_MISSING: tuple[OnMissing, ...] = ("hold", "skip")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SOURCE_ATTRS = ("src", "field")
_TARGET_ATTRS = ("dst", "field")


@dataclass(frozen=True)
class Tier:
    """One exposure step: a share of keys and/or named tenants that read and write new."""

    name: str
    percent: float = 0.0
    tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fences:
    """Limits that must hold for the rollout to advance; a breach halts it. None = unchecked."""

    max_lag_events: int | None = None
    max_lag_seconds: float | None = None
    max_error_rate: float | None = None
    max_divergence_ratio: float | None = None
    max_p99_apply_seconds: float | None = None
    #: A fence with a limit whose measurement is missing (metrics unreachable, topic
    #: unknown): "hold" (default) keeps the stage and records why; "skip" passes it
    #: (the behaviour before this setting existed). Set in ``[migration.fences] on_missing``.
    on_missing: OnMissing = "hold"


@dataclass(frozen=True)
class MigrationPlan:
    name: str
    spec: str
    source: str
    target: str
    owners: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    touches: dict[str, tuple[str, ...]] = field(default_factory=dict)
    write_amplification: float = 1.0
    tiers: tuple[Tier, ...] = ()
    tenants_deny: tuple[str, ...] = ()
    fences: Fences = Fences()
    rollback_required: bool = True
    #: Consecutive fence breaches after which the controller rolls back by itself (0 = never).
    rollback_after_breaches: int = 0
    #: /metrics URLs of this migration's transform workers (for the p99 apply-latency fence).
    metrics_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    name: str
    collections: dict[str, tuple[str, ...]]
    migrations: tuple[MigrationPlan, ...]
    evaluation_interval_s: float = 5.0
    #: Advance one step this often while fences hold and the gate says READY (0 = on command).
    advance_every_s: float = 0.0
    #: Seconds after cutover before ``complete`` may retire the old collection.
    retention_s: float = 86_400.0
    #: Tiers at or above this percentage are the ``ramp`` stage, below it ``canary``.
    ramp_from_percent: float = 25.0

    def migration(self, name: str) -> MigrationPlan:
        for m in self.migrations:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.migrations)
        raise PlanError(f"migration {name!r} is not in plan {self.name!r} (it has: {known})")


def load_plan(path: str | Path, hooks: HookPolicy = NO_HOOKS) -> Plan:
    """Parse and validate a plan file; raises PlanError listing every problem.

    ``hooks``: which hook modules the migrations' specs may import (none by default).
    """
    plan = parse_plan(path)
    problems = validate(plan, hooks)
    if problems:
        raise PlanError(f"plan {path} is invalid:\n  - " + "\n  - ".join(problems))
    return plan


def _read_plan_file(path: Path) -> dict[str, Any]:
    """TOML, or YAML for a ``.yaml``/``.yml`` file; a clear PlanError for anything else."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PlanError(f"plan file {path} does not exist") from None
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"plan file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise PlanError(f"plan file {path}: the top level must be a mapping, not {raw!r:.40}")
        return raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"plan file {path} is not valid TOML: {exc}") from None


def parse_plan(path: str | Path) -> Plan:
    """Read the file into a Plan without the semantic checks (see :func:`validate`)."""
    raw = _read_plan_file(Path(path))
    try:
        head = raw.get("plan", {})
        default_tiers = tuple(_tier(t) for t in head.get("tiers", []))
        collections = {
            ns: tuple(spec.get("fields", [])) for ns, spec in raw.get("collections", {}).items()
        }
        migrations = tuple(_migration(m, default_tiers) for m in raw.get("migration", []))
        return Plan(
            name=str(head.get("name", Path(path).stem)),
            collections=collections,
            migrations=migrations,
            evaluation_interval_s=float(head.get("evaluation_interval_s", 5.0)),
            advance_every_s=float(head.get("advance_every_s", 0.0)),
            retention_s=float(head.get("retention_s", 86_400.0)),
            ramp_from_percent=float(head.get("ramp_from_percent", 25.0)),
        )
    except PlanError as exc:
        raise PlanError(f"plan file {path}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise PlanError(f"plan file {path}: malformed entry ({type(exc).__name__}: {exc})") from exc


def _tier(raw: dict[str, Any]) -> Tier:
    percent = float(raw.get("percent", 0.0))
    return Tier(
        name=str(raw.get("name", f"{percent:g}%")),
        percent=percent,
        tenants=tuple(raw.get("tenants", ())),
    )


def _migration(raw: dict[str, Any], default_tiers: tuple[Tier, ...]) -> MigrationPlan:
    fences = raw.get("fences", {})
    rollback = raw.get("rollback", {})
    tiers = tuple(_tier(t) for t in raw["tiers"]) if "tiers" in raw else default_tiers
    return MigrationPlan(
        name=raw["name"],
        spec=raw["spec"],
        source=raw["source"],
        target=raw["target"],
        owners=tuple(raw.get("owners", ())),
        depends_on=tuple(raw.get("depends_on", ())),
        touches={ns: tuple(fields) for ns, fields in raw.get("touches", {}).items()},
        write_amplification=float(raw.get("write_amplification", 1.0)),
        tiers=tiers,
        tenants_deny=tuple(raw.get("tenants_deny", ())),
        fences=_fences(raw["name"], fences),
        rollback_required=bool(rollback.get("required", True)),
        rollback_after_breaches=int(rollback.get("after_breaches", 0)),
        metrics_urls=tuple(raw.get("metrics_urls", ())),
    )


def _fences(migration: str, raw: dict[str, Any]) -> Fences:
    on_missing = raw.get("on_missing", "hold")
    if on_missing not in _ON_MISSING:
        raise PlanError(
            f"migration {migration!r}: [migration.fences] on_missing = {on_missing!r} is not "
            '"hold" (a fence without a measurement holds the stage; the default) or "skip" '
            "(it is passed)"
        )
    return Fences(**{**raw, "on_missing": on_missing})


def validate(plan: Plan, hooks: HookPolicy = NO_HOOKS) -> list[str]:
    """Every problem in the plan, as sentences naming the migration and what to fix."""
    problems: list[str] = []
    names = [m.name for m in plan.migrations]
    if not names:
        problems.append("the plan lists no [[migration]] entries")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"migration {dup!r} is listed more than once")
    for m in plan.migrations:
        problems.extend(_check_migration(plan, m, set(names), hooks))
    cycle = find_cycle(plan)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


def _check_migration(plan: Plan, m: MigrationPlan, names: set[str], hooks: HookPolicy) -> list[str]:
    out: list[str] = []
    where = f"migration {m.name!r}"
    if not _NAME.match(m.name):
        out.append(f"{where}: name must be 1-63 letters, digits, '_' or '-' (it names topics)")
    spec: MigrationSpec | None = None
    try:
        spec = get_spec(m.spec, hooks)
    except ConfigError as exc:
        out.append(f"{where}: {exc}")
    for role, ns in (
        ("source", m.source),
        ("target", m.target),
        *(("touches", t) for t in m.touches),
    ):
        if ns not in plan.collections:
            out.append(
                f"{where}: {role} collection {ns!r} is not declared under [collections] "
                f"(declared: {', '.join(sorted(plan.collections)) or 'none'})"
            )
    for ns, fields in m.touches.items():
        known = plan.collections.get(ns, ())
        for f in fields:
            if known and f.split(".")[0] not in known:
                out.append(
                    f"{where}: touches unknown field {ns}.{f} (declared: {', '.join(known)})"
                )
    if spec is not None:
        out.extend(_check_spec_fields(plan, m, spec, where))
        if m.rollback_required and not invertible(spec):
            out.append(
                f"{where}: rollback is required but spec {m.spec!r} has steps without an "
                "inverse; give every step an inverse or set [migration.rollback] required = false"
            )
    out.extend(
        f"{where}: depends on unknown migration {dep!r}" for dep in m.depends_on if dep not in names
    )
    out.extend(_check_tiers(m, where))
    if m.fences.max_p99_apply_seconds is not None and not m.metrics_urls:
        out.append(
            f"{where}: max_p99_apply_seconds needs metrics_urls (the transform workers' /metrics)"
        )
    return out


def _check_tiers(m: MigrationPlan, where: str) -> list[str]:
    out: list[str] = []
    last = -1.0
    for tier in m.tiers:
        if not 0 <= tier.percent <= 100:
            out.append(f"{where}: tier {tier.name!r} percent {tier.percent} is outside 0..100")
        if tier.percent < last:
            out.append(
                f"{where}: tier {tier.name!r} lowers the percentage ({tier.percent} < {last})"
            )
        last = tier.percent
    if not m.tiers:
        out.append(f"{where}: no exposure tiers (set [plan] tiers or the migration's tiers)")
    return out


def _check_spec_fields(plan: Plan, m: MigrationPlan, spec: MigrationSpec, where: str) -> list[str]:
    out: list[str] = []
    for ns, attrs, side in (
        (m.source, _SOURCE_ATTRS, "source"),
        (m.target, _TARGET_ATTRS, "target"),
    ):
        declared = plan.collections.get(ns, ())
        if not declared:
            continue
        for step in spec.steps:
            for attr in attrs:
                path = getattr(step, attr, None)
                if isinstance(path, str) and path.split(".")[0] not in declared:
                    out.append(
                        f"{where}: spec step {type(step).__name__} uses {side} field "
                        f"{ns}.{path}, which the plan does not declare"
                    )
                    break
    return out


def invertible(spec: MigrationSpec) -> bool:
    """Every step has a callable ``invert`` and none declares ``reversible = False``."""
    return all(
        callable(getattr(step, "invert", None)) and getattr(step, "reversible", True)
        for step in spec.steps
    )


def find_cycle(plan: Plan) -> list[str]:
    """One dependency cycle as a path (first node repeated at the end), or []."""
    deps = {m.name: list(m.depends_on) for m in plan.migrations}
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        color[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if dep not in deps:
                continue
            if color.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if color.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        color[node] = 2
        return []

    for name in sorted(deps):
        if color.get(name) is None:
            found = visit(name)
            if found:
                return found
    return []


def run_order(plan: Plan) -> list[str]:
    """Dependencies first, ties by name (a valid, acyclic plan)."""
    deps = {m.name: set(m.depends_on) & {x.name for x in plan.migrations} for m in plan.migrations}
    done: list[str] = []
    while len(done) < len(deps):
        ready = sorted(n for n, d in deps.items() if n not in done and d <= set(done))
        if not ready:
            raise PlanError("dependency cycle: run `plan validate` for the path")
        done.append(ready[0])
    return done


def render(plan: Plan) -> str:
    """The migration matrix (who touches what) and the run order, as plain text tables."""
    cols = sorted(plan.collections)
    head = ["MIGRATION", "OWNERS", "DEPENDS ON", "WRITE AMP", *cols]
    rows = [head]
    for m in plan.migrations:
        cells = []
        for ns in cols:
            marks = []
            if ns == m.source:
                marks.append("read")
            if ns == m.target:
                marks.append("write")
            fields = m.touches.get(ns)
            text = "+".join(marks)
            if fields:
                text = f"{text} {','.join(fields)}".strip()
            cells.append(text or "-")
        rows.append(
            [
                m.name,
                ",".join(m.owners) or "-",
                ",".join(m.depends_on) or "-",
                f"{m.write_amplification:g}x",
                *cells,
            ]
        )
    lines = [f"plan {plan.name}", "", *_table(rows), "", "run order:"]
    lines += [f"  {i}. {name}" for i, name in enumerate(run_order(plan), 1)]
    lines.append("")
    for m in plan.migrations:
        tiers = " -> ".join(
            t.name + (f" ({','.join(t.tenants)})" if t.tenants else "") for t in m.tiers
        )
        fences = ", ".join(
            f"{k}={v}" for k, v in vars(m.fences).items() if v is not None and k != "on_missing"
        )
        if fences:
            fences += f" (unmeasured: {m.fences.on_missing})"
        lines.append(f"{m.name}: tiers {tiers or '-'}; fences {fences or 'none'}")
        lines.append(
            f"  rollback {'required' if m.rollback_required else 'not required'}"
            + (
                f", automatic after {m.rollback_after_breaches} breaches"
                if m.rollback_after_breaches
                else ""
            )
        )
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
