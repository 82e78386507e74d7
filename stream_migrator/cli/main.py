"""The ``stream-migrator`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from stream_migrator.errors import ConfigError, InfraError, StreamMigratorError
from stream_migrator.redact import redacted_output
from stream_migrator.settings import Settings, cli_flags, load_settings

_SETTING_FLAGS = cli_flags()


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    fields = Settings.model_fields
    for name, flag in _SETTING_FLAGS.items():
        field = fields[name]
        if field.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                action="store_true",
                default=None,
                help=f"{field.description} (env SM_{name.upper()})",
            )
            continue
        kind: Callable[[str], Any] = int if field.annotation is int else str
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            help=f"{field.description} (env SM_{name.upper()})",
        )


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(**{name: getattr(args, name, None) for name in _SETTING_FLAGS})


def _cmd_capture(args: argparse.Namespace) -> int:
    from stream_migrator.app import run_capture, stop_on_signals
    from stream_migrator.capture.positions import apply_capture_action
    from stream_migrator.observability import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    apply_capture_action(
        settings,
        resume_after=args.resume_after,
        start_at=args.start_at,
        resnapshot=args.resnapshot,
    )
    run_capture(settings, stop_on_signals())
    return 0


def _cmd_transform(args: argparse.Namespace) -> int:
    from stream_migrator.app import run_transform, stop_on_signals
    from stream_migrator.observability import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    run_transform(settings, stop_on_signals())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from stream_migrator.mongo import connect
    from stream_migrator.reconcile import full_compare
    from stream_migrator.spec import get_spec

    settings = _settings(args)
    client = connect(settings.mongo_uri.get_secret_value(), app="compare")
    try:
        sdb, scoll = settings.split_ns(settings.source)
        tdb, tcoll = settings.split_ns(settings.target)
        spec = get_spec(settings.spec, settings.hook_policy)
        report = full_compare(client[sdb][scoll], client[tdb][tcoll], spec)
    finally:
        client.close()
    print(f"source documents:   {report.source_count}")
    print(f"target documents:   {report.target_count}")
    print(f"missing in target:  {report.missing}")
    print(f"extra in target:    {report.extra}")
    print(f"different:          {report.different}")
    print(f"untransformable:    {report.untransformable} (expected in quarantine)")
    for example in report.examples:
        print(f"  {example}")
    print("MATCH" if report.mismatches == 0 else f"DIVERGED: {report.mismatches} mismatches")
    return 0 if report.mismatches == 0 else 1


def _cmd_status(args: argparse.Namespace) -> int:
    """One read-only view of the migration; ``--watch`` refreshes it until Ctrl-C (exit 0)."""
    from stream_migrator.status.reader import DEFAULT_MAX_RECONCILE_AGE_S, StatusReader
    from stream_migrator.status_view import render

    if args.migration_name:
        if args.migration and args.migration != args.migration_name:
            raise ConfigError(
                f"status {args.migration_name} --migration {args.migration}: "
                "name the migration once"
            )
        args.migration = args.migration_name
    settings = _settings(args)
    if args.watch is not None and args.watch <= 0:
        raise ConfigError(f"--watch {args.watch:g}: the refresh interval must be above 0 seconds")
    max_age = args.max_reconcile_age
    if max_age is None:
        max_age = DEFAULT_MAX_RECONCILE_AGE_S
    reader = StatusReader(settings, max_reconcile_age_s=max_age)
    try:
        while True:
            doc = reader.read()
            if args.json:
                # One document per line, so a --watch stream is JSON Lines.
                print(json.dumps(doc, default=str), flush=True)
            else:
                if args.watch is not None and sys.stdout.isatty():
                    print("\033[H\033[J", end="")  # redraw in place on a terminal
                print(render(doc), flush=True)
                if args.watch is not None:
                    print(flush=True)
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how --watch ends
    finally:
        reader.close()


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).masked(), indent=2, default=str))
    return 0


_SASL_USER = "stream-migrator"


def _stack(args: argparse.Namespace) -> Any:
    from stream_migrator.infra import DEFAULT_STATE_DIR, LocalStack
    from stream_migrator.infra.stack import ScramUser

    state = Path(args.state_dir) if args.state_dir else DEFAULT_STATE_DIR
    if not getattr(args, "secure_kafka", False):
        return LocalStack(state)
    password_file = state / "kafka-sasl-password"
    if not password_file.exists():
        import secrets

        state.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_urlsafe(18))
    return LocalStack(state, sasl_ssl_user=ScramUser(_SASL_USER, password_file.read_text()))


def _cmd_infra(args: argparse.Namespace) -> int:
    stack = _stack(args)
    if args.action == "up":
        servers = stack.up()
        if args.secure_kafka and "kafka-sasl-ssl" not in servers:
            raise ConfigError(
                f"the local stack in {stack.state_dir} is already running without a SASL_SSL "
                "listener: run `stream-migrator infra down` first, then `infra up --secure-kafka`"
            )
        print(f"kafka  {stack.kafka_bootstrap()}")
        print(f"mongo  {stack.mongo_uri()}")
        print("use them with:")
        if args.secure_kafka:
            print(f"  export SM_KAFKA_BOOTSTRAP={stack.kafka_sasl_ssl_bootstrap()}")
            print("  export SM_KAFKA_SECURITY_PROTOCOL=sasl_ssl")
            print("  export SM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512")
            print(f"  export SM_KAFKA_SASL_USERNAME={_SASL_USER}")
            print(f'  export SM_KAFKA_SASL_PASSWORD="$(cat {stack.state_dir}/kafka-sasl-password)"')
            print(f"  export SM_KAFKA_SSL_CA_LOCATION={stack.kafka_ca_file()}")
        else:
            print(f"  export SM_KAFKA_BOOTSTRAP={stack.kafka_bootstrap()}")
        print(f"  export SM_MONGO_URI='{stack.mongo_uri()}'")
        return 0
    if args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    rows = stack.status()
    if not rows:
        print(f"no local stack recorded in {stack.state_dir}; start one with `infra up`")
        return 1
    for row in rows:
        state = "answering" if row["answering"] else ("running" if row["running"] else "stopped")
        print(f"{row['name']:6} {row['address']:21} pid {row['pid']:<8} {state:9} log {row['log']}")
    return 0 if all(r["answering"] for r in rows) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream_migrator.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        docs=args.docs,
        live_seconds=args.live_seconds,
        live_rate=args.live_rate,
        bad_docs=args.bad_docs,
        keep_stack=args.keep_stack,
        timeout_s=args.timeout,
        rollout=args.rollout,
    )
    report = run_demo(options)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-migrator",
        description="Move a live MongoDB collection to a new document shape with no lost write.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("capture", help="snapshot the source, then tail its change stream")
    _add_settings_flags(p)
    way_out = p.add_mutually_exclusive_group()
    way_out.add_argument(
        "--resume-after",
        metavar="TOKEN",
        help='resume the stream after this token ({"_data": "..."} or its hex); no snapshot',
    )
    way_out.add_argument(
        "--start-at",
        metavar="TIME",
        help="start the stream at this operation time (SECONDS[.INC] or ISO-8601); no snapshot",
    )
    way_out.add_argument(
        "--resnapshot",
        action="store_true",
        help="forget the checkpoint and copy the whole collection again",
    )
    p.set_defaults(func=_cmd_capture)

    p = sub.add_parser("transform", help="run a transform worker: Kafka -> spec -> target")
    _add_settings_flags(p)
    p.set_defaults(func=_cmd_transform)

    p = sub.add_parser("compare", help="full compare of transform(source) against target")
    _add_settings_flags(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "status",
        help="where the migration stands: capture, lag, quarantine, reconcile, rollout and "
        "whether it can cut over (read only)",
    )
    p.add_argument(
        "migration_name",
        metavar="MIGRATION",
        nargs="?",
        help="migration name (default: SM_MIGRATION)",
    )
    _add_settings_flags(p)
    p.add_argument(
        "--json", action="store_true", help="print the status document (JSON; one per line)"
    )
    p.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C",
    )
    p.add_argument(
        "--max-reconcile-age",
        type=float,
        metavar="SECONDS",
        help="a reconcile that finished longer ago blocks can_cutover (default 3600)",
    )
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("config", help="print the effective settings (secrets masked)")
    _add_settings_flags(p)
    p.set_defaults(func=_cmd_config)

    from stream_migrator.cli.quarantine import register as register_quarantine

    register_quarantine(sub, _add_settings_flags, _settings)

    from stream_migrator.cli.spec import register as register_spec

    register_spec(sub)
    from stream_migrator.cli.reconcile import register as register_reconcile

    register_reconcile(sub, _add_settings_flags, _settings)
    from stream_migrator.cli.rollout import register as register_rollout

    register_rollout(sub, _add_settings_flags, _settings)

    p = sub.add_parser("infra", help="the local Kafka + MongoDB-wire stack (no Docker needed)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--state-dir", help="where pids, ports, logs and data live (default .sm/stack)")
    p.add_argument(
        "--secure-kafka",
        action="store_true",
        help="up: also give the broker a SASL_SSL listener (SCRAM user, test CA) and print "
        "the SM_KAFKA_* settings that reach it",
    )
    p.set_defaults(func=_cmd_infra)

    p = sub.add_parser("demo", help="migrate a live shop.orders end to end on the local stack")
    p.add_argument("--docs", type=int, default=20_000, help="v1 documents to seed (default 20000)")
    p.add_argument(
        "--live-seconds",
        type=float,
        default=15.0,
        help="seconds of live inserts/updates/deletes during the migration",
    )
    p.add_argument("--live-rate", type=int, default=300, help="live writes per second")
    p.add_argument(
        "--bad-docs",
        type=int,
        default=5,
        help="malformed documents seeded to show quarantine (default 5)",
    )
    p.add_argument("--keep-stack", action="store_true", help="leave Kafka and MongoDB running")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument(
        "--rollout",
        action="store_true",
        help="then stage a rollout: advance, breach a fence (halt + revert), roll back",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors become one line on stderr and a distinct exit code.

    Everything a command prints, its errors included, leaves through
    ``redacted_output``: driver errors quote URIs and options (in ``status``,
    ``quarantine``, ...), so no command has to remember to mask its own output.
    """
    with redacted_output():
        args = build_parser().parse_args(argv)
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"stream-migrator: configuration error: {exc}", file=sys.stderr)
        return 2
    except InfraError as exc:
        print(f"stream-migrator: {exc}", file=sys.stderr)
        return 3
    except StreamMigratorError as exc:
        print(f"stream-migrator: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, not a traceback quoting secrets
        if structlog.is_configured():  # its processors scrub the traceback too
            structlog.get_logger("stream_migrator.cli").exception("cli.unexpected_error")
        detail = " ".join(str(exc).split())
        print(f"stream-migrator: unexpected error: {type(exc).__name__}: {detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
