"""Transform: consume, rewrite to the target shape, write idempotently, quarantine the bad."""

from stream_migrator.interfaces import TargetWrite
from stream_migrator.transform.sink import MongoSink
from stream_migrator.transform.worker import TransformWorker

__all__ = ["MongoSink", "TargetWrite", "TransformWorker"]
