"""Rollout errors: each names what is wrong, where, and what to do."""

from __future__ import annotations

from stream_migrator.errors import ConfigError, RetryableError, StreamMigratorError


class RolloutError(StreamMigratorError):
    """A rollout command cannot be carried out in the current state."""


class VersionConflictError(RolloutError):
    """Someone else changed the rollout state between our read and our write."""


class UnconfirmedWriteError(RetryableError, RolloutError):
    """A rollout state write reached the primary but no majority confirmed it in time."""


class PlanError(ConfigError):
    """The plan file is invalid; nothing was changed."""


class NoRolloutStateError(RolloutError):
    """The router knows no rollout state for its migration and has no fallback namespace."""


class RouterLeaseExpiredError(RetryableError, RolloutError):
    """The router's lease ran out (MongoDB unreachable): it sends no write to new until renewed."""
