"""Application-facing router SDK (re-exported from :mod:`stream_migrator.rollout.router`)."""

from stream_migrator.rollout.router import (
    NoRolloutStateError,
    Router,
    Target,
    bucket,
    side_for,
    stamp,
    stamp_update,
    version_now,
)

__all__ = [
    "NoRolloutStateError",
    "Router",
    "Target",
    "bucket",
    "side_for",
    "stamp",
    "stamp_update",
    "version_now",
]
