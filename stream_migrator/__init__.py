"""stream-migrator: move a live MongoDB collection to a new document shape, losing nothing."""

from typing import TYPE_CHECKING

from stream_migrator._lazy import lazy_exports

if TYPE_CHECKING:
    from stream_migrator.errors import StreamMigratorError
    from stream_migrator.events import ChangeEvent
    from stream_migrator.settings import Settings, load_settings
    from stream_migrator.spec import MigrationSpec, get_spec

__version__ = "0.1.0"
__all__ = [
    "ChangeEvent",
    "MigrationSpec",
    "Settings",
    "StreamMigratorError",
    "get_spec",
    "load_settings",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "ChangeEvent": "stream_migrator.events",
        "MigrationSpec": "stream_migrator.spec",
        "Settings": "stream_migrator.settings",
        "StreamMigratorError": "stream_migrator.errors",
        "get_spec": "stream_migrator.spec",
        "load_settings": "stream_migrator.settings",
    },
)
