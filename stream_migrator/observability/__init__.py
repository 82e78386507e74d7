"""Logs, metrics and the health endpoint shared by every process.

The re-exports load on first use (see :mod:`stream_migrator._lazy`): a logger must
not start the import of the HTTP health server.
"""

from typing import TYPE_CHECKING

from stream_migrator._lazy import lazy_exports

if TYPE_CHECKING:
    from stream_migrator.observability.health import HealthServer, HealthState
    from stream_migrator.observability.logging import configure_logging, get_logger

__all__ = ["HealthServer", "HealthState", "configure_logging", "get_logger"]
__getattr__ = lazy_exports(
    __name__,
    {
        "HealthServer": "stream_migrator.observability.health",
        "HealthState": "stream_migrator.observability.health",
        "configure_logging": "stream_migrator.observability.logging",
        "get_logger": "stream_migrator.observability.logging",
    },
)
