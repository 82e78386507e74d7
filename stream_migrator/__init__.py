"""stream-migrator: move a live MongoDB collection to a new document shape, losing nothing."""

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
