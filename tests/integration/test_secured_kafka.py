"""Kafka TLS + SASL: a real SASL_SSL listener (SCRAM user, keytool keystore) on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from stream_migrator.errors import ConfigError
from stream_migrator.infra.certs import openssl_pem
from stream_migrator.kafka_security import check_kafka_access
from stream_migrator.settings import Settings, load_settings
from tests.integration.helpers import cli, settings_env
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


@pytest.mark.parametrize("fault", ["wrong password", "untrusted CA", "plaintext client"])
def test_capture_with_bad_kafka_security_exits_2_and_touches_nothing(
    secure_kafka: SecureKafka,
    settings_kwargs: dict[str, Any],
    mongo_uri: str,
    tmp_path: Path,
    fault: str,
) -> None:
    """The process stops at start with one sentence naming the setting; no data is touched."""
    changes: dict[str, str] = {
        "wrong password": {"kafka_sasl_password": "not-the-password"},
        "untrusted CA": {"kafka_ssl_ca_location": str(openssl_pem(tmp_path / "ca").ca_pem)},
        "plaintext client": {
            "kafka_security_protocol": "plaintext",
            "kafka_sasl_mechanism": "",
            "kafka_sasl_username": "",
            "kafka_sasl_password": "",
            "kafka_ssl_ca_location": "",
        },
    }[fault]
    needle = {
        "wrong password": "SM_KAFKA_SASL_PASSWORD",
        "untrusted CA": "SM_KAFKA_SSL_CA_LOCATION",
        "plaintext client": "SM_KAFKA_SECURITY_PROTOCOL",
    }[fault]
    settings = Settings(**{**settings_kwargs, **secure_kafka.settings(), **changes})
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    db, coll = settings.split_ns(settings.source)
    client[db][coll].insert_one({"_id": 1, "cust_name": "x"})
    done = cli("capture", env=settings_env(settings), timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("stream-migrator:")]
    assert len(lines) == 1, done.stderr[-2000:]
    assert needle in lines[0]
    assert "not-the-password" not in done.stderr + done.stdout
    assert settings.metadata_db not in client.list_database_names()
    topics = (
        AdminClient({"bootstrap.servers": secure_kafka.plaintext_bootstrap})
        .list_topics(timeout=10)
        .topics
    )
    assert settings.changes_topic not in topics
    client.close()
