"""``stream-migrator spec check FILE``: validate a spec and prove its round trip on samples.

Exit codes: 0 valid and every document round-trips, 1 some document does not
or no document was checked (unless ``--allow-empty``), 2 the spec is invalid
(each problem printed as ``file:line: ...``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stream_migrator.errors import ConfigError
from stream_migrator.progress import Progress, add_progress_flag, command_logging
from stream_migrator.redact import redact_text, redact_uri


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``spec`` command group to the main parser."""
    p = sub.add_parser("spec", help="validate a migration spec and check its round trip")
    actions = p.add_subparsers(dest="spec_action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate FILE, run it over sample documents, report inverse(transform(d)) != d",
        description=(
            "Validate a spec file, then run it over source documents sampled from MongoDB "
            "(with --mongo-uri or --mongo-uri-file) or generated from the source schema and the "
            "spec's examples. "
            "Exit 0 when every document round-trips, 1 when some does not or when no "
            "document was checked (unless --allow-empty), 2 when the spec is invalid."
        ),
    )
    check.add_argument("file", metavar="FILE", help="a spec .yaml file, or a built-in spec name")
    # The settings' own flags: the URI is loaded, checked and its secrets registered
    # as every other command's. Not the environment's SM_MONGO_URI alone: exported
    # in every deployment, it would silently turn generated samples into sampled ones.
    check.add_argument(
        "--mongo-uri", help="sample real source documents from this MongoDB (default: generate)"
    )
    check.add_argument(
        "--mongo-uri-file",
        metavar="FILE",
        help="as --mongo-uri, the URI read from FILE (kept off the command line and `ps`)",
    )
    check.add_argument(
        "--source", metavar="DB.COLL", help="collection to sample (default: the spec's source)"
    )
    check.add_argument(
        "--sample", type=int, default=200, metavar="N", help="documents to check (default 200)"
    )
    check.add_argument("--seed", type=int, default=0, help="seed of the generated documents")
    check.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when there is no document to check (default: exit 1, nothing was proven)",
    )
    check.add_argument(
        "--allow-hooks",
        action="store_true",
        default=None,
        help="let the spec import its Python hooks (env SM_ALLOW_HOOKS; SM_HOOKS_ALLOWED)",
    )
    add_progress_flag(check)
    check.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from stream_migrator.settings import load_settings
    from stream_migrator.spec import get_spec
    from stream_migrator.spec.check import check_documents, generated_documents, render
    from stream_migrator.spec.errors import SpecError

    try:
        settings = load_settings(
            allow_hooks=args.allow_hooks,
            mongo_uri=args.mongo_uri,
            mongo_uri_file=args.mongo_uri_file,
        )
        spec = get_spec(args.file, settings.hook_policy)
    except SpecError as exc:
        print(f"spec {args.file}: invalid", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"spec {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.sample < 0:
        print("spec check: --sample must be 0 or more", file=sys.stderr)
        return 2
    if args.mongo_uri or args.mongo_uri_file:
        ns = args.source or (str(spec.source) if spec.source else None)
        if not ns or "." not in ns:
            print("spec check: give --source DB.COLL (the spec names no source)", file=sys.stderr)
            return 2
        docs = _sample(settings.mongo_uri.get_secret_value(), ns, args.sample)
        sample = f"{len(docs)} documents from {ns}"
        when_empty: str | None = f"{ns} has none"
    else:
        docs = generated_documents(spec, args.sample, args.seed)
        what = [f"{len(spec.examples[: args.sample])} examples"]
        if spec.source_schema is not None:
            what.append(f"generated from schema {spec.source_schema.name}, seed {args.seed}")
        sample = f"{len(docs)} documents ({', '.join(what)})"
        when_empty = None
    # Progress goes to log lines when stderr is no terminal.
    with (
        command_logging(settings.log_level),
        Progress(f"spec check {spec.name}", len(docs), interval_s=args.progress_interval) as bar,
    ):
        report = check_documents(spec, docs, sample, progress=bar)
    if args.sample == 0 or when_empty:
        report.when_empty = "--sample 0" if args.sample == 0 else str(when_empty)
    print(render(report, allow_empty=args.allow_empty))
    if not report.ok:
        return 1
    return 1 if report.empty and not args.allow_empty else 0


def _sample(uri: str, ns: str, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` source documents: a random ``$sample``, or the first ones if unsupported."""
    from pymongo.errors import OperationFailure, PyMongoError

    from stream_migrator.mongo import connect

    db, coll = ns.split(".", 1)
    client = connect(uri, app="spec-check")
    try:
        collection = client[db][coll]
        try:
            return list(collection.aggregate([{"$sample": {"size": count}}]))
        except OperationFailure:
            return list(collection.find({}).limit(count))
    except PyMongoError as exc:
        raise ConfigError(
            f"cannot sample {ns} from {redact_uri(uri)}: {redact_text(str(exc))}"
        ) from None
    finally:
        client.close()
