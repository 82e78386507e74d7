"""Capture: change-stream tailer, initial snapshot, resume checkpoints."""

from stream_migrator.capture.checkpoint import MongoCheckpointStore
from stream_migrator.capture.tailer import Capture

__all__ = ["Capture", "MongoCheckpointStore"]
