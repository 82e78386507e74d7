"""Secrets: one masking for URIs, Kafka properties and free text; Kafka security settings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from stream_migrator.errors import ConfigError
from stream_migrator.observability import configure_logging
from stream_migrator.redact import (
    is_sensitive_property,
    redact_properties,
    redact_text,
    redact_uri,
    register_secret,
    uri_secrets,
)
from stream_migrator.settings import load_settings

AWS_URI = (
    "mongodb://app:s3cr%40t-pw@db1:27017,db2:27017/?replicaSet=rs0&authMechanism=MONGODB-AWS"
    "&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdzE-token&tls=true"
    "&tlsCertificateKeyFilePassword=key-pass-123"
)


def test_redact_uri_masks_password_and_every_sensitive_option() -> None:
    """Password, authMechanismProperties and the key-file password go; the rest stays."""
    masked = redact_uri(AWS_URI)
    for secret in ("s3cr%40t-pw", "FQoGZXIvYXdzE-token", "key-pass-123"):
        assert secret not in masked
    assert masked.startswith("mongodb://app:***@db1:27017,db2:27017/?replicaSet=rs0")
    assert "authMechanismProperties=***" in masked
    assert "tlsCertificateKeyFilePassword=***" in masked
    assert "tls=true" in masked
    assert redact_uri("mongodb://h/?directConnection=true") == "mongodb://h/?directConnection=true"


def test_uri_secrets_gives_encoded_and_decoded_password() -> None:
    """A driver may quote the decoded password: both forms are scrubbed."""
    found = set(uri_secrets(AWS_URI))
    assert {"s3cr%40t-pw", "s3cr@t-pw", "key-pass-123"} <= found


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("sasl.password", True),
        ("sasl.jaas.config", True),
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("sasl.username", False),
        ("ssl.ca.location", False),
        ("security.protocol", False),
    ],
)
def test_sensitive_kafka_properties(name: str, sensitive: bool) -> None:
    """Secrets by librdkafka name, or by a name part such as password/secret."""
    assert is_sensitive_property(name) is sensitive


def test_redact_properties_masks_only_sensitive_values() -> None:
    """Kafka properties printed by `config` keep their non-secret values."""
    props = {"sasl.username": "svc", "sasl.password": "hunter22", "ssl.ca.location": "/ca.pem"}
    assert redact_properties(props) == {
        "sasl.username": "svc",
        "sasl.password": "***",
        "ssl.ca.location": "/ca.pem",
    }


def test_registered_secret_is_scrubbed_from_log_lines() -> None:
    """A registered secret never reaches a rendered log line, nested or in a traceback."""
    register_secret("zebra-crossing-991")
    out = io.StringIO()
    configure_logging("info", json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
    try:
        _log_with_secrets()
    finally:
        configure_logging("info")  # back to stderr for the tests that follow
    text = out.getvalue()
    assert "zebra-crossing-991" not in text
    assert text.count("***") >= 3
    assert json.loads(text.splitlines()[0])["event"] == "driver.error"
    assert redact_text("short ab") == "short ab"  # values under 4 characters are not scrubbed


def _log_with_secrets() -> None:
    log = structlog.get_logger()
    log.warning(
        "driver.error",
        error="auth failed for zebra-crossing-991",
        nested={"a": ["zebra-crossing-991"]},
    )
    try:
        raise RuntimeError("boom zebra-crossing-991")
    except RuntimeError:
        log.exception("crash")


def test_masked_settings_hide_secrets_and_register_them(tmp_path: Path) -> None:
    """`config` output: the URI masked, SecretStr fields as ***; loading registers them."""
    props = tmp_path / "client.properties"
    props.write_text(
        "# extra\nsasl.oauthbearer.client.secret=oauth-secret-77\n"
        "ssl.endpoint.identification.algorithm=none\n"
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    s = load_settings(
        mongo_uri=AWS_URI,
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="kafka-pass-42",
        kafka_ssl_ca_location=str(ca),
        kafka_config_file=str(props),
    )
    shown = json.dumps(s.masked(), default=str)
    for secret in ("s3cr", "FQoGZXIvYXdzE-token", "kafka-pass-42", "oauth-secret-77"):
        assert secret not in shown
    assert s.masked()["kafka_sasl_password"] == "***"
    assert (
        s.masked()["kafka_config_file_properties"]["ssl.endpoint.identification.algorithm"]
        == "none"
    )
    for secret in ("s3cr@t-pw", "kafka-pass-42", "oauth-secret-77", "key-pass-123"):
        assert redact_text(f"x {secret} y") == "x *** y"


def test_kafka_security_properties_map_settings_to_librdkafka_names(tmp_path: Path) -> None:
    """SM_KAFKA_* settings become librdkafka properties; they override the file's."""
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=file-user\n")
    s = load_settings(
        kafka_config_file=str(props), kafka_sasl_username="env-user", kafka_sasl_password="pw-1234"
    )
    assert s.kafka_client == {
        "security.protocol": "SASL_SSL",  # the default plaintext does not override the file
        "sasl.mechanism": "PLAIN",
        "sasl.username": "env-user",
        "sasl.password": "pw-1234",
    }
    assert load_settings().kafka_client == {"security.protocol": "plaintext"}


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"kafka_security_protocol": "sasl_ssl"}, "needs SM_KAFKA_SASL_MECHANISM"),
        (
            {"kafka_security_protocol": "sasl_ssl", "kafka_sasl_mechanism": "PLAIN"},
            "needs SM_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "kafka_security_protocol": "sasl_plaintext",
                "kafka_sasl_mechanism": "SCRAM-SHA-256",
                "kafka_sasl_username": "u",
            },
            "needs SM_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "u"}, "does not use SASL"),
        ({"kafka_ssl_ca_location": "/etc/hosts"}, "does not use TLS"),
        (
            {"kafka_security_protocol": "ssl", "kafka_ssl_ca_location": "/nonexistent/ca.pem"},
            "SM_KAFKA_SSL_CA_LOCATION=/nonexistent/ca.pem",
        ),
        ({"kafka_security_protocol": "tls"}, "SM_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_bad_kafka_security_stops_at_load(values: dict[str, str], needle: str) -> None:
    """A bad Kafka security setting is a ConfigError naming it, before any client exists."""
    with pytest.raises(ConfigError) as raised:
        load_settings(**values)
    assert needle in str(raised.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bootstrap.servers=evil:9092\n", ":1: bootstrap.servers is set by stream-migrator"),
        ("# c\nenable.auto.commit=true\n", ":2: enable.auto.commit is set by stream-migrator"),
        ("just words\n", ":1: expected key=value"),
    ],
)
def test_kafka_config_file_errors_name_file_and_line(
    tmp_path: Path, text: str, needle: str
) -> None:
    """A properties file line that is malformed or overrides a pipeline guarantee is refused."""
    props = tmp_path / "client.properties"
    props.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(kafka_config_file=str(props))
    assert f"SM_KAFKA_CONFIG_FILE={props}" in str(raised.value)
    assert needle in str(raised.value)


def test_mongo_uri_file_replaces_the_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SM_MONGO_URI_FILE: the URI comes from the file (trailing newline ignored)."""
    monkeypatch.delenv("SM_MONGO_URI", raising=False)
    uri_file = tmp_path / "uri"
    uri_file.write_text("mongodb://svc:file-pw-9@h:27017/?tls=true\n")
    s = load_settings(mongo_uri_file=str(uri_file))
    assert s.mongo_uri.get_secret_value() == "mongodb://svc:file-pw-9@h:27017/?tls=true"
    assert "file-pw-9" not in json.dumps(s.masked(), default=str)
    assert redact_text("file-pw-9") == "***"


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        (None, {}, "cannot read the file"),
        ("not a uri", {}, "does not hold a MongoDB connection string"),
        ("mongodb://a/", {"mongo_uri": "mongodb://b/"}, "both SM_MONGO_URI and SM_MONGO_URI_FILE"),
    ],
)
def test_mongo_uri_file_errors(
    tmp_path: Path,
    content: str | None,
    extra: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing, wrong or contradicted URI file is a ConfigError naming SM_MONGO_URI_FILE."""
    monkeypatch.delenv("SM_MONGO_URI", raising=False)
    uri_file = tmp_path / "uri"
    if content is not None:
        uri_file.write_text(content)
    with pytest.raises(ConfigError) as raised:
        load_settings(mongo_uri_file=str(uri_file), **extra)
    assert needle in str(raised.value)
    assert "SM_MONGO_URI_FILE" in str(raised.value)


@pytest.mark.parametrize("values", [True, False], ids=["bounded", "types only"])
def test_quarantine_reasons_show_bounded_values_or_only_types(
    values: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value reaches the reason cut to 64 characters, or as its type with the switch off."""
    from stream_migrator.errors import TransformError
    from stream_migrator.spec import get_spec

    monkeypatch.setenv("SM_LOG_DOCUMENT_VALUES", str(values).lower())
    try:
        load_settings()
        doc = dict(get_spec("orders.v1_to_v2").examples[0])
        doc["total"] = "card-4111111111111111-" + "x" * 200  # not a number, and private
        with pytest.raises(TransformError) as raised:
            get_spec("orders.v1_to_v2").migrate(doc)
    finally:
        monkeypatch.delenv("SM_LOG_DOCUMENT_VALUES")
        load_settings()  # the switch back to its default for the tests that follow
    reason = str(raised.value)
    assert reason.startswith("total: ")
    assert "x" * 100 not in reason
    if values:
        assert "'card-4111111111111111-xxx" in reason
        assert "(224 characters)" in reason
    else:
        assert "4111" not in reason
        assert "<string> is not a number" in reason
