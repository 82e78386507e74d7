"""Operator ways out for capture: resume from a token, start at a time, or re-snapshot.

Each is applied to the checkpoint before capture starts and recorded, with the
checkpoint it replaced, in ``<metadata_db>.capture_actions``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from typing import Any

from bson import Timestamp, json_util
from pymongo.collection import Collection

from stream_migrator import events
from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.errors import ConfigError
from stream_migrator.mongo import connect
from stream_migrator.observability import get_logger
from stream_migrator.settings import Settings

log = get_logger("capture")


def parse_token(text: str) -> dict[str, Any]:
    """A resume token given as Extended JSON (``{"_data": "..."}``) or as its bare hex string."""
    text = text.strip()
    if text.startswith("{"):
        try:
            token = json_util.loads(text)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--resume-after: {text!r} is not valid JSON: {exc}") from None
        if not isinstance(token, dict) or "_data" not in token:
            raise ConfigError('--resume-after: a token is a document like {"_data": "8263..."}')
        return token
    if text and all(c in "0123456789abcdefABCDEF" for c in text):
        return {"_data": text}
    raise ConfigError(
        f"--resume-after: {text!r} is neither a token document nor a hex _data string"
    )


def parse_start_at(text: str) -> Timestamp:
    """An operation time: ``SECONDS[.INCREMENT]`` (a BSON timestamp) or an ISO-8601 datetime."""
    text = text.strip()
    seconds, _, inc = text.partition(".")
    if seconds.isdigit() and (not inc or inc.isdigit()):
        return Timestamp(int(seconds), int(inc or 0))
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--start-at: {text!r} is neither SECONDS[.INCREMENT] nor an ISO-8601 datetime "
            "(e.g. 2026-11-24T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"--start-at: {text!r} has no time zone; add Z or +00:00")
    return Timestamp(int(when.timestamp()), 0)


def apply_action(
    store: MongoCheckpointStore,
    actions: Collection[dict[str, Any]],
    migration: str,
    *,
    resume_after: str | None = None,
    start_at: str | None = None,
    resnapshot: bool = False,
) -> str | None:
    """Rewrite the checkpoint as the operator asked; returns a description, or None."""
    chosen = [a for a in (resume_after, start_at, resnapshot or None) if a is not None]
    if len(chosen) > 1:
        raise ConfigError("--resume-after, --start-at and --resnapshot exclude each other")
    if not chosen:
        return None
    previous = store.load()
    done = {"done": True, "last_id": None, "skipped_by": "operator"}
    if resume_after is not None:
        token = parse_token(resume_after)
        store.replace(resume_token=token, start_at=None, snapshot=done)
        what = f"resume after token {token['_data']}"
    elif start_at is not None:
        ts = parse_start_at(start_at)
        store.replace(resume_token=None, start_at=events.version_of(ts), snapshot=done)
        what = f"start at operation time {ts.time}.{ts.inc}"
    else:
        store.clear()  # the next start takes a new position and copies everything again
        what = "re-snapshot from scratch"
    actions.insert_one(
        {
            "migration": migration,
            "action": what,
            "at": dt.datetime.now(dt.UTC),
            "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "replaced_checkpoint": previous,
        }
    )
    return what


def apply_capture_action(
    settings: Settings,
    *,
    resume_after: str | None = None,
    start_at: str | None = None,
    resnapshot: bool = False,
) -> str | None:
    """Apply an operator's --resume-after / --start-at / --resnapshot before capture starts."""
    client = connect(settings.mongo_uri.get_secret_value(), app="capture-action")
    try:
        store = MongoCheckpointStore(client, settings.metadata_db, settings.migration)
        what = apply_action(
            store,
            client[settings.metadata_db]["capture_actions"],
            settings.migration,
            resume_after=resume_after,
            start_at=start_at,
            resnapshot=resnapshot,
        )
    finally:
        client.close()
    if what:
        log.warning("capture.operator_action", action=what)
    return what
