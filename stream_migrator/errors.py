"""Error hierarchy: one root, fatal vs retryable, messages that say what to do."""

from __future__ import annotations


class StreamMigratorError(Exception):
    """Root of every error stream-migrator raises on purpose."""


class ConfigError(StreamMigratorError):
    """The configuration is invalid; raised before any data is touched."""


class RetryableError(StreamMigratorError):
    """A transient failure; the caller should wait ``retry_after`` seconds and retry."""

    def __init__(self, message: str, *, retry_after: float = 1.0, code: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class FatalError(StreamMigratorError):
    """A failure that retrying will not fix; the process stops without committing."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EnvelopeError(StreamMigratorError):
    """A Kafka message is not a valid change envelope."""


class TransformError(StreamMigratorError):
    """A document cannot be transformed by the migration spec; it goes to quarantine."""

    def __init__(self, message: str, *, field: str | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        #: Which spec step failed, e.g. ``"3 (cast)"`` or ``"schema"``; None when unknown.
        self.step = step


class InfraError(StreamMigratorError):
    """The local server stack cannot be installed, started or reached."""
