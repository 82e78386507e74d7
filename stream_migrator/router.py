"""Application-facing router SDK (re-exported from :mod:`stream_migrator.rollout.router`)."""

from stream_migrator.rollout.router import (
    NoRolloutStateError,
    Router,
    RouterLeaseExpiredError,
    Target,
    bucket,
    canonical_id,
    observe_cluster_time,
    side_for,
    stamp,
    stamp_update,
    version_now,
)

__all__ = [
    "NoRolloutStateError",
    "Router",
    "RouterLeaseExpiredError",
    "Target",
    "bucket",
    "canonical_id",
    "observe_cluster_time",
    "side_for",
    "stamp",
    "stamp_update",
    "version_now",
]
