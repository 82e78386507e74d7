"""Secured servers for the tests: a Kafka broker with a SASL_SSL listener (SCRAM, test CA)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream_migrator.infra.stack import LocalStack, ScramUser

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SecureKafka:
    """Where the SASL_SSL listener is and who may log in."""

    bootstrap: str
    plaintext_bootstrap: str
    ca_file: Path
    user: ScramUser

    def settings(self) -> dict[str, str]:
        """Settings keyword arguments for a client that logs in correctly."""
        return {
            "kafka_bootstrap": self.bootstrap,
            "kafka_security_protocol": "sasl_ssl",
            "kafka_sasl_mechanism": self.user.mechanism,
            "kafka_sasl_username": self.user.username,
            "kafka_sasl_password": self.user.password,
            "kafka_ssl_ca_location": str(self.ca_file),
        }

    def env(self) -> dict[str, str]:
        """The same, as SM_* environment variables for a CLI process."""
        return {f"SM_{k.upper()}": v for k, v in self.settings().items()}


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[SecureKafka]:
    """A broker of its own (the shared one stays plaintext), started once per test module."""
    user = ScramUser("sm-test", f"scram-{uuid.uuid4().hex[:12]}")
    stack = LocalStack(
        REPO / ".sm" / f"test-secure-kafka-{uuid.uuid4().hex[:6]}", sasl_ssl_user=user
    )
    stack.up(quiet=True, only=frozenset({"kafka"}))
    try:
        yield SecureKafka(
            stack.kafka_sasl_ssl_bootstrap(), stack.kafka_bootstrap(), stack.kafka_ca_file(), user
        )
    finally:
        stack.down()
