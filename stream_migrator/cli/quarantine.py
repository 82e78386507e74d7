"""``stream-migrator quarantine list|show|replay``: inspect and re-run quarantined events."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bson import json_util

from stream_migrator import events
from stream_migrator.errors import EnvelopeError, TransformError
from stream_migrator.progress import Progress, add_progress_flag, command_logging
from stream_migrator.settings import Settings
from stream_migrator.transform.prepare import to_target_write
from stream_migrator.transform.quarantine import QuarantinedEvent, read_quarantine


def register(sub: Any, add_settings_flags: Any, settings_of: Any) -> None:
    """Add the ``quarantine`` command to the top-level parser."""
    p = sub.add_parser("quarantine", help="list, show or replay quarantined events")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="one line per quarantined event")
    show = actions.add_parser("show", help="one event in full: headers and decoded envelope")
    show.add_argument("position", help="PARTITION:OFFSET (or OFFSET for partition 0)")
    replay = actions.add_parser(
        "replay", help="re-run events through the current spec and the version-guarded writer"
    )
    replay.add_argument(
        "positions", nargs="*", help="PARTITION:OFFSET values to replay (default: all)"
    )
    add_progress_flag(replay)
    for parser in (lst, show, replay):
        add_settings_flags(parser)
        parser.set_defaults(func=lambda a: _run(a, settings_of(a)))


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from stream_migrator.app import transform_decoder

    # Quarantined values are in the format the worker read them (SM_INPUT_FORMAT).
    decode = transform_decoder(settings)
    quarantined = read_quarantine(
        settings.kafka_bootstrap, settings.quarantine_topic, security=settings.kafka_client
    )
    if args.action == "list":
        return _list(settings, quarantined)
    if args.action == "show":
        return _show(quarantined, _position(args.position), decode)
    return _replay(
        settings,
        quarantined,
        {_position(p) for p in args.positions},
        decode,
        args.progress_interval,
    )


def _position(text: str) -> str:
    partition, _, offset = text.rpartition(":")
    if not offset.isdigit() or (partition and not partition.isdigit()):
        raise SystemExit(f"stream-migrator: {text!r} is not PARTITION:OFFSET or OFFSET")
    return f"{partition or 0}:{int(offset)}"


def _list(settings: Settings, quarantined: list[QuarantinedEvent]) -> int:
    if not quarantined:
        print(f"{settings.quarantine_topic} is empty")
        return 0
    print(f"{'POSITION':10} {'STAGE':10} {'_ID':26} REASON")
    for e in quarantined:
        reason = e.reason if len(e.reason) <= 90 else e.reason[:87] + "..."
        print(f"{e.position:10} {e.stage:10} {e.doc_id()!s:26} {reason}")
    print(f"{len(quarantined)} events in {settings.quarantine_topic}")
    return 0


def _show(
    quarantined: list[QuarantinedEvent],
    position: str,
    decode: Callable[[bytes | None], events.ChangeEvent] = events.decode,
) -> int:
    match = [e for e in quarantined if e.position == position]
    if not match:
        print(f"no quarantined event at {position}")
        return 1
    e = match[0]
    print(f"position  {e.position}")
    for key, value in sorted(e.headers.items()):
        print(f"{key:22} {value}")
    try:
        ev = decode(e.value)
    except EnvelopeError as exc:
        print(f"envelope  undecodable: {exc}")
        print(f"raw       {e.value[:200]!r}")
        return 0
    print(f"op        {ev.op}")
    print(f"ns        {ev.ns}")
    print(f"version   {ev.cluster_time} ({events.timestamp_of(ev.cluster_time)})")
    print(
        "document  "
        + json_util.dumps(ev.document, indent=2, json_options=json_util.RELAXED_JSON_OPTIONS)
    )
    return 0


def _replay(
    settings: Settings,
    quarantined: list[QuarantinedEvent],
    wanted: set[str],
    decode: Callable[[bytes | None], events.ChangeEvent],
    progress_interval: float | None = None,
) -> int:
    from stream_migrator.app import target_sink
    from stream_migrator.mongo import connect
    from stream_migrator.spec import get_spec

    chosen = [e for e in quarantined if not wanted or e.position in wanted]
    missing = wanted - {e.position for e in chosen}
    if missing:
        print(f"not in quarantine: {', '.join(sorted(missing))}")
        return 1
    spec = get_spec(settings.spec, settings.hook_policy)
    client = connect(settings.mongo_uri.get_secret_value(), app="quarantine-replay")
    try:
        sink = target_sink(settings, client)  # the forward worker's, so replay writes as it does
        counts = {"applied": 0, "stale": 0, "failing": 0, "cannot": 0}
        # Progress goes to log lines when stderr is no terminal.
        with (
            command_logging(settings.log_level),
            Progress(
                f"quarantine replay {settings.migration}",
                len(chosen),
                unit="events",
                interval_s=progress_interval,
            ) as progress,
        ):
            for e in chosen:
                outcome = _replay_one(e, spec, sink, decode)
                key = "failing" if outcome.startswith("still failing") else outcome.split()[0]
                counts[key] += 1
                progress.write(f"{e.position:10} {e.doc_id()!s:26} {outcome}")
                progress.advance()
    finally:
        client.close()
    print(
        f"replayed {len(chosen)}: {counts['applied']} applied, {counts['stale']} stale "
        f"(a newer version was already there), {counts['failing']} still failing, "
        f"{counts['cannot']} cannot be replayed from the quarantine (left there)"
    )
    return 1 if counts["failing"] or counts["cannot"] else 0


#: Capture quarantines an event too big for Kafka as a stub: key and version, no
#: document. Replaying the stub would look like "update of a deleted document" and
#: write nothing, so it must not be reported as a (stale) success.
_UNREPLAYABLE = (
    "cannot be replayed from the quarantine: the event was too big for Kafka, so capture "
    "kept only its _id {doc_id!r} and version, not the document. Raise SM_MAX_EVENT_BYTES "
    "together with the changes topic's max.message.bytes, then send the document again: "
    "`stream-migrator capture --resnapshot`, or re-touch it (any update of _id {doc_id!r} "
    "on the source). The event stays in quarantine"
)


def _replay_one(
    e: QuarantinedEvent,
    spec: Any,
    sink: Any,
    decode: Callable[[bytes | None], events.ChangeEvent] = events.decode,
) -> str:
    try:
        ev = decode(e.value)
    except EnvelopeError as exc:
        return f"still failing: {exc}"
    if e.stage == "capture" and ev.op != "delete" and ev.document is None:
        return _UNREPLAYABLE.format(doc_id=ev.doc_id)
    try:
        write = to_target_write(ev, spec)
    except TransformError as exc:
        return f"still failing: {exc}"
    if write is None:
        return "stale (update of a document that was deleted)"
    result = sink.apply([write])
    if result.failed:
        return f"still failing: {result.failed[0][1]}"
    return "applied" if result.written else "stale"
