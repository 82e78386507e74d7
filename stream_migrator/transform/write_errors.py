"""How the target's write errors are read: retry, stale, or a real failure (quarantine).

MongoDB's rules, not the stand-in's: a write-concern error means "not durable"
(retry, never count it written); a duplicate key is a lost race only on ``_id``
(or the stand-in's ``sm_cas``); any other unique index is a conflict in the data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)

from stream_migrator.errors import FatalError, RetryableError
from stream_migrator.events import META_FIELD
from stream_migrator.redact import MAX_VALUE_CHARS, document_values_shown
from stream_migrator.spec.casts import shown

DUPLICATE_KEY = 11000
#: The index that lets mongo-java-server find ``{_id, _sm.v: <exact>}`` without a scan.
CAS_INDEX = "sm_cas"
#: Write-error codes that a retry can fix (the rest are data problems -> quarantine).
_TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64, 50}
#: The index a duplicate key error names in its message (``... index: <name> dup key: ...``).
_DUP_INDEX = re.compile(r"index: (.+?) dup key")
_DUP_KEY = re.compile(r"dup key: (.*)$")
#: How much of a server's error message a quarantine reason keeps.
_MAX_MESSAGE = 200


def write_errors(exc: BulkWriteError) -> list[dict[str, Any]]:
    """The bulk's per-write errors; raises RetryableError if a retry can fix the batch.

    That is: any write-concern error (the writes ran on the primary but may be rolled
    back on failover, so they must not count as written nor let offsets be committed;
    the retry is safe because every write is version-guarded), or a transient write error.
    """
    concern = write_concern_failure(exc)
    if concern is not None:
        raise concern from exc
    errors: list[dict[str, Any]] = exc.details.get("writeErrors", [])
    transient = [e for e in errors if e.get("code") in _TRANSIENT_CODES]
    if transient:
        raise RetryableError(
            f"target write failed transiently ({transient[0].get('errmsg')})",
            retry_after=1.0,
            code=transient[0].get("code"),
        ) from exc
    return errors


def write_concern_failure(exc: BulkWriteError) -> RetryableError | None:
    """The RetryableError for a bulk whose ``writeConcernErrors`` is not empty, else None."""
    concern: list[dict[str, Any]] = exc.details.get("writeConcernErrors") or []
    if not concern:
        return None
    first = concern[0]
    return RetryableError(
        f"target write was not acknowledged by its write concern (code {first.get('code')} "
        f"{first.get('codeName', '')}: {first.get('errmsg')}); it may be rolled back on "
        "failover, so the batch is retried and no offset is committed. If this persists, "
        "check the replica set's members and the URI's w / wtimeoutMS",
        retry_after=1.0,
        code=first.get("code"),
    )


def is_id_race(err: Mapping[str, Any]) -> bool:
    """True when a write error is a duplicate key on ``_id`` (or ``sm_cas``): a lost race.

    MongoDB names the index in ``keyPattern`` (``{"_id": 1}``); servers without it
    (mongo-java-server) are judged by the index name in ``errmsg`` (``index: _id_``).
    A duplicate on any other unique index is a real conflict, not a stale write.
    """
    if err.get("code") != DUPLICATE_KEY:
        return False
    pattern = err.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        return list(pattern) in (["_id"], ["_id", f"{META_FIELD}.v"])
    found = _DUP_INDEX.search(str(err.get("errmsg", "")))
    return found is not None and found.group(1) in ("_id_", CAS_INDEX)


def duplicate_reason(err: Mapping[str, Any]) -> str:
    """Why a write hit a duplicate key on a unique index other than ``_id``, and what to do.

    The key's value is document content: shown cut short, or only its type
    (``SM_LOG_DOCUMENT_VALUES=false``), like every value in a quarantine reason.
    """
    msg = str(err.get("errmsg", ""))
    index = _DUP_INDEX.search(msg)
    pattern = err.get("keyPattern")
    name = index.group(1) if index else (dict(pattern) if pattern else "an unnamed index")
    key_value = err.get("keyValue")
    dup = _DUP_KEY.search(msg)
    if key_value is not None:
        key = shown(key_value)
    elif dup:
        key = _server_text(dup.group(1), MAX_VALUE_CHARS)
    else:
        key = "unknown key"
    return (
        f"duplicate key on unique index {name} of the target, key {key}: another target "
        "document already holds this value (code 11000). Resolve the conflict in the data "
        "(or drop the index), then run `stream-migrator quarantine replay`"
    )


def write_error_reason(err: Mapping[str, Any]) -> str:
    """The quarantine reason of one failed write (the server's message may quote the document)."""
    if err.get("code") == DUPLICATE_KEY:
        return duplicate_reason(err)
    name = f" {err['codeName']}" if err.get("codeName") else ""
    return f"code {err.get('code')}{name}: {_server_text(str(err.get('errmsg')), _MAX_MESSAGE)}"


def _server_text(text: str, limit: int) -> str:
    """A server message that may hold document values: cut to ``limit``, or hidden."""
    if not document_values_shown():
        return "<server message hidden: SM_LOG_DOCUMENT_VALUES=false>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def translate(exc: PyMongoError) -> RetryableError | FatalError:
    """Driver error -> our error, keeping the code; transient ones become retryable."""
    code = getattr(exc, "code", None)
    if isinstance(exc, AutoReconnect | ExecutionTimeout):
        return RetryableError(f"target unavailable: {exc}", retry_after=1.0, code=code)
    if isinstance(exc, WriteConcernError):
        # Applied on the primary, not acknowledged as asked: retry (writes are idempotent).
        return RetryableError(
            f"target write was not acknowledged by its write concern: {exc}; retrying",
            code=code,
        )
    if isinstance(exc, BulkWriteError):
        concern = write_concern_failure(exc)
        if concern is not None:
            return concern
        errors = exc.details.get("writeErrors", [])
        if errors and all(e.get("code") in _TRANSIENT_CODES for e in errors):
            return RetryableError(f"target write failed transiently: {exc}", code=code)
    if exc.has_error_label("RetryableWriteError") or code in _TRANSIENT_CODES:
        return RetryableError(f"target write failed: {exc}", code=code)
    return FatalError(f"target write failed: {exc}", code=code)
