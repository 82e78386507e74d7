"""Logs, metrics and the health endpoint shared by every process."""

from stream_migrator.observability.health import HealthServer, HealthState
from stream_migrator.observability.logging import configure_logging, get_logger

__all__ = ["HealthServer", "HealthState", "configure_logging", "get_logger"]
