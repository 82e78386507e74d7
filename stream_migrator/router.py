"""Application-facing router SDK: the router, its routing rule and write stamps.

Re-exported from :mod:`stream_migrator.rollout.router` (see its docstring),
``rollout.routing``, ``rollout.stamps`` and ``rollout.errors``.
"""

from stream_migrator.rollout.errors import NoRolloutStateError, RouterLeaseExpiredError
from stream_migrator.rollout.router import Router
from stream_migrator.rollout.routing import Target, bucket, canonical_id, side_for
from stream_migrator.rollout.stamps import observe_cluster_time, stamp, stamp_update, version_now

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
