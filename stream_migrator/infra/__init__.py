"""The local server stack (Kafka + mongo-java-server) for machines without Docker."""

from stream_migrator.infra.probes import free_port
from stream_migrator.infra.stack import DEFAULT_STATE_DIR, LocalStack

__all__ = ["DEFAULT_STATE_DIR", "LocalStack", "free_port"]
