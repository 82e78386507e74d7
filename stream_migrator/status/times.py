"""Stored datetimes as the status document shows them: epoch seconds, ISO-8601 UTC."""

from __future__ import annotations

import datetime as dt
from typing import Any


def epoch(value: Any) -> float | None:
    """Epoch seconds of a stored datetime (naive ones are UTC); None for anything else."""
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp()


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")
