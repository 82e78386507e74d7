"""Kafka TLS + SASL: a real SASL_SSL listener (SCRAM user, keytool keystore) on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_migrator.errors import ConfigError
from stream_migrator.infra.certs import openssl_pem
from stream_migrator.kafka_security import check_kafka_access
from stream_migrator.settings import load_settings
from tests.integration.secured import SecureKafka


def test_sasl_ssl_client_with_right_settings_connects(secure_kafka: SecureKafka) -> None:
    """The SM_KAFKA_* settings give a client that logs in through TLS and SCRAM."""
    settings = load_settings(**secure_kafka.settings())
    check_kafka_access(settings.kafka_bootstrap, settings.kafka_client, timeout=30)


def _refusal(secure_kafka: SecureKafka, **changes: str) -> str:
    settings = load_settings(**{**secure_kafka.settings(), **changes})
    with pytest.raises(ConfigError) as raised:
        check_kafka_access(settings.kafka_bootstrap, settings.kafka_client, timeout=30)
    return str(raised.value)


def test_wrong_password_is_one_sentence_naming_the_password(secure_kafka: SecureKafka) -> None:
    """A wrong SCRAM password: the error names SM_KAFKA_SASL_PASSWORD, and never the password."""
    message = _refusal(secure_kafka, kafka_sasl_password="not-the-password")
    assert "refused the login" in message
    assert "SM_KAFKA_SASL_PASSWORD" in message
    assert "not-the-password" not in message


def test_untrusted_ca_names_the_ca_setting(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """A CA that did not sign the broker's certificate: the error names SM_KAFKA_SSL_CA_LOCATION."""
    other = openssl_pem(tmp_path / "other-ca")
    message = _refusal(secure_kafka, kafka_ssl_ca_location=str(other.ca_pem))
    assert f"SM_KAFKA_SSL_CA_LOCATION={other.ca_pem}" in message
    assert "not signed by a CA" in message


def test_plaintext_client_at_tls_listener_names_the_protocol(secure_kafka: SecureKafka) -> None:
    """A plaintext client at the SASL_SSL listener: the error says to set the protocol."""
    settings = load_settings(kafka_bootstrap=secure_kafka.bootstrap)
    with pytest.raises(ConfigError) as raised:
        check_kafka_access(settings.kafka_bootstrap, settings.kafka_client, timeout=30)
    assert "SM_KAFKA_SECURITY_PROTOCOL=plaintext" in str(raised.value)
    assert "sasl_ssl" in str(raised.value)
