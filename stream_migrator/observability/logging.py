"""structlog setup: JSON lines when not on a TTY, readable output on one; contextvars merged."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from stream_migrator.redact import redact_log_event


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog once per process. ``json=None`` means "JSON unless stderr is a TTY"."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_log_event,  # last before rendering: also scrubs tracebacks
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # sys.stderr looked up per logger, not bound once: a test's captured stderr (or
        # a redirect) closed since configuration must not be written to.
        logger_factory=lambda *_args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A lazy logger carrying ``component=name``.

    Lazy on purpose: module-level loggers are created at import, before
    :func:`configure_logging` runs, and must still pick up its configuration.
    """
    return structlog.get_logger(component=name)
