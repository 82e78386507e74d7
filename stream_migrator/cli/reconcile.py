"""``stream-migrator reconcile MIGRATION [--sample P] [--repair] [--json] [--watch]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stream_migrator.errors import ConfigError
from stream_migrator.progress import Progress, add_progress_flag
from stream_migrator.reconcile.report import render_text
from stream_migrator.reconcile.settings import load_reconcile_settings


def register(sub: Any, add_settings_flags: Any, settings_of: Any) -> None:
    """Add the ``reconcile`` command to the top-level parser."""
    p = sub.add_parser(
        "reconcile",
        help="lag, divergence and field coverage of a migration, and a READY verdict",
        description="Compare transform(source) with the target in _id buckets while writes "
        "continue, recheck in-flight documents, report why documents differ, and say "
        "whether the migration is READY for cutover (exit 0) or NOT READY (exit 1).",
    )
    p.add_argument(
        "migration_name",
        metavar="MIGRATION",
        nargs="?",
        help="migration name (default: SM_MIGRATION)",
    )
    add_settings_flags(p)
    p.add_argument(
        "--sample",
        metavar="P",
        help="compare a random P of each side (1%% or 0.01) for a quick estimate with a "
        "95%% confidence interval; the cutover gate needs a full run",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-emit divergent and missing documents through the transform path, then recheck",
    )
    p.add_argument(
        "--delete-orphans",
        action="store_true",
        help="with --repair: also delete target documents that have no source",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--all",
        action="store_true",
        dest="all_fields",
        help="list every field-coverage path (default: summarized beyond a depth and a count)",
    )
    p.add_argument("--restart", action="store_true", help="start a new compare instead of resuming")
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep running: re-measure every SM_RECONCILE_INTERVAL_S and serve /metrics",
    )
    p.add_argument(
        "--bucket-size", type=int, help="documents per bucket (SM_RECONCILE_BUCKET_SIZE)"
    )
    p.add_argument(
        "--recheck-timeout",
        type=float,
        help="seconds to recheck in-flight mismatches (SM_RECONCILE_RECHECK_TIMEOUT_S)",
    )
    p.add_argument("--interval", type=float, help="--watch period (SM_RECONCILE_INTERVAL_S)")
    add_progress_flag(p)
    p.set_defaults(func=lambda a: _run(a, settings_of(a)))


def parse_sample(text: str | None) -> float | None:
    """``1%`` or ``0.01`` -> 0.01; None stays None."""
    if text is None:
        return None
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(
            f"--sample {text!r}: expected a percentage like 1% or a fraction like 0.01"
        ) from None
    if not 0 < value <= 1 or (value == 1 and not raw.endswith("%")):
        raise ConfigError(
            f"--sample {text!r}: must be above 0 and at most 100% (write 1% or 0.01, not 1)"
        )
    return value


def _run(args: argparse.Namespace, base: Any) -> int:
    from stream_migrator.app import run_watch, stop_on_signals
    from stream_migrator.observability import configure_logging
    from stream_migrator.reconcile.service import run_reconcile

    if args.delete_orphans and not args.repair:
        raise ConfigError("--delete-orphans only acts with --repair")
    settings = load_reconcile_settings(
        base,
        migration=args.migration_name,
        reconcile_bucket_size=args.bucket_size,
        reconcile_recheck_timeout_s=args.recheck_timeout,
        reconcile_interval_s=args.interval,
    )
    sample = parse_sample(args.sample)
    configure_logging(settings.log_level)
    stop = stop_on_signals()
    if args.watch:
        run_watch(settings, stop, sample=sample)
        return 0
    # Full compares count both sides against their estimated_document_count; a sample
    # knows exactly how many ids it drew.
    repairing: list[Progress] = []  # opened when the repair starts, after the compare's

    def repair_progress(done: int, total: int) -> None:
        if not repairing:
            progress.close()  # the compare is finished: its bar stays at its end
            repairing.append(
                Progress(
                    f"repair {settings.migration}",
                    total,
                    json=args.json,
                    interval_s=args.progress_interval,
                )
            )
        repairing[0].update(done, total)

    with Progress(
        f"reconcile {settings.migration}",
        estimated=sample is None,
        json=args.json,
        interval_s=args.progress_interval,
    ) as progress:
        try:
            report = run_reconcile(
                settings,
                sample=sample,
                restart=args.restart,
                repair=args.repair,
                delete_orphans=args.delete_orphans,
                stop=stop,
                progress=progress,
                repair_progress=repair_progress,
            )
        finally:
            for bar in repairing:
                bar.close()
    if args.json:
        from bson import json_util

        print(json.dumps(json.loads(json_util.dumps(report.to_json())), indent=2))
    else:
        print(render_text(report, all_fields=args.all_fields))
    return 0 if report.verdict.ready else 1
