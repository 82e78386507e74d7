"""Application-facing router SDK (re-exported from :mod:`stream_migrator.rollout.router`)."""

from stream_migrator.rollout.router import Router, Target, bucket, side_for, stamp, version_now

__all__ = ["Router", "Target", "bucket", "side_for", "stamp", "version_now"]
