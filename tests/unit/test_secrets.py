"""Secrets: one masking for URIs, Kafka properties and free text; Kafka security settings."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog
from pymongo.errors import PyMongoError

from stream_migrator import kafka, mongo
from stream_migrator.cli import main
from stream_migrator.errors import ConfigError, InfraError
from stream_migrator.observability import configure_logging
from stream_migrator.redact import (
    MASK,
    is_sensitive_property,
    redact_properties,
    redact_text,
    redact_uri,
    register_secret,
    uri_secrets,
)
from stream_migrator.settings import load_settings, mongo_uri_env

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


def _unique(label: str) -> str:
    """A secret value no earlier test registered (registered secrets are process-wide)."""
    return f"{label}-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("option", ["proxyPassword", "fooToken", "clientSecret"])
def test_redact_uri_masks_any_option_named_like_a_secret(option: str) -> None:
    """An option named with password/secret/token is masked, listed or not; others stay."""
    value = _unique("opt")
    masked = redact_uri(f"mongodb://h:1/?{option}={value}&proxyHost=px&authSource=admin")
    assert value not in masked
    assert f"{option}={MASK}" in masked
    assert "proxyHost=px&authSource=admin" in masked


@pytest.mark.parametrize("scheme", ["mongodb", "mongodb+srv"])
def test_redact_text_masks_sensitive_options_of_any_uri_in_text(scheme: str) -> None:
    """A URI quoted in free text loses its secrets even though none was registered."""
    token, key, proxy = _unique("TOKEN"), _unique("KEYPASS"), _unique("PROXY")
    text = (
        f"cannot sample shop.orders from {scheme}://h1:27017,h2/?authMechanism=MONGODB-AWS"
        f"&authMechanismProperties=AWS_SESSION_TOKEN:{token}"
        f"&tlsCertificateKeyFilePassword={key}&proxyPassword={proxy}&tls=true: refused"
    )
    shown = redact_text(text)
    for secret in (token, key, proxy):
        assert secret not in shown
    assert f"from {scheme}://h1:27017,h2/?authMechanism=MONGODB-AWS" in shown
    assert "&tls=true: refused" in shown


def test_uri_secrets_include_each_auth_mechanism_property_value() -> None:
    """A driver may quote a session token alone: each property's value is a secret too."""
    token = _unique("FQoG")
    uri = (
        "mongodb://h/?authMechanism=MONGODB-AWS"
        f"&authMechanismProperties=SERVICE_NAME:mongodb,AWS_SESSION_TOKEN%3A{token}"
    )
    found = set(uri_secrets(uri))
    assert token in found
    assert "mongodb" not in found  # a public property: scrubbing it would mangle every URI
    load_settings(mongo_uri=uri)
    assert redact_text(f"the token {token} expired") == f"the token {MASK} expired"


def test_spec_check_sampling_error_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spec check --mongo-uri`: a failed sample names the URI masked and quotes no secret."""
    password, token, key = _unique("PW"), _unique("TOKEN"), _unique("KEYPASS")
    uri = (
        f"mongodb://svc:{password}@h:1/?authMechanismProperties=AWS_SESSION_TOKEN:{token}"
        f"&tlsCertificateKeyFilePassword={key}"
    )

    class _Refusing:
        def __getitem__(self, _name: str) -> _Refusing:
            return self

        def aggregate(self, _pipeline: Any) -> Any:
            raise PyMongoError(f"AWS authentication failed: session token {token} expired")

        def close(self) -> None:
            pass

    monkeypatch.setattr(mongo, "connect", lambda *_a, **_k: _Refusing())
    code = main(["spec", "check", "orders.v1_to_v2", "--mongo-uri", uri, "--source", "a.b"])
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert code == 2
    assert "cannot sample a.b from mongodb://svc:***@h:1/" in shown
    for secret in (password, token, key):
        assert secret not in shown


def test_unexpected_error_is_one_redacted_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug's exception text (which may quote a URI) is one masked line, not a traceback."""
    cli_main = importlib.import_module("stream_migrator.cli.main")  # the package shadows it

    proxy = _unique("PROXY")

    def _crash(_args: Any) -> int:
        raise RuntimeError(f"boom at mongodb://u:pw-1234@h/?proxyPassword={proxy}")

    monkeypatch.setattr(cli_main, "_cmd_config", _crash)
    configure_logging("info", json=True)  # as a long-running process: the traceback is logged
    assert main(["config"]) == 1
    captured = capsys.readouterr()
    assert proxy not in captured.out + captured.err
    assert "pw-1234" not in captured.out + captured.err
    logged, shown = captured.err.strip().splitlines()
    assert json.loads(logged)["event"] == "cli.unexpected_error"
    assert "Traceback" in json.loads(logged)["exception"]
    assert shown == (
        f"stream-migrator: unexpected error: RuntimeError: boom at "
        f"mongodb://u:{MASK}@h/?proxyPassword={MASK}"
    )


def test_everything_a_verb_prints_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout and stderr of every verb go through redaction (driver text in `status`, ...)."""
    cli_main = importlib.import_module("stream_migrator.cli.main")  # the package shadows it

    secret = _unique("session")
    register_secret(secret)

    def _prints_driver_text(_args: Any) -> int:
        print(f"mongo: MongoDB did not answer: auth failed for token {secret}")
        print(f"warning: {secret}", file=sys.stderr)
        return 0

    monkeypatch.setattr(cli_main, "_cmd_config", _prints_driver_text)
    assert main(["config"]) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert captured.out == f"mongo: MongoDB did not answer: auth failed for token {MASK}\n"


def test_every_mongo_uri_flag_registers_its_secrets() -> None:
    """Each verb taking --mongo-uri loads it as the settings' URI, which registers its secrets."""
    from stream_migrator.cli.main import _settings, build_parser

    verbs = _verbs_with_option(build_parser(), "--mongo-uri")
    assert {"capture", "transform", "status", "spec check", "reconcile"} <= set(verbs)
    positional = {
        "spec check": ["orders.v1_to_v2"],
        "reconcile": ["m"],
        "quarantine show": ["0:0"],
        "rollout": ["status", "plan.toml"],
        "audit": ["m"],
    }
    for verb, parser in verbs.items():
        token = _unique("tok")
        uri = f"mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:{token}"
        args = parser.parse_args([*positional.get(verb, []), "--mongo-uri", uri])
        assert args.mongo_uri == uri, verb
        _settings(args)
        assert redact_text(token) == MASK, verb


def _verbs_with_option(
    parser: argparse.ArgumentParser, option: str, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found = {prefix.strip(): parser} if option in parser._option_string_actions else {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_verbs_with_option(sub, option, f"{prefix} {name}"))
    return found


def test_unanswered_kafka_access_check_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker that did not answer is checked again by the next client; one that did is not."""
    calls: list[str] = []

    def _check(bootstrap: str, _props: dict[str, str], timeout: float) -> None:
        calls.append(bootstrap)
        if len(calls) == 1:
            raise InfraError(f"Kafka at {bootstrap} did not answer")

    monkeypatch.setattr(kafka, "check_kafka_access", _check)
    broker = f"{_unique('broker')}:9092"
    for _ in range(3):
        kafka.client_config(broker, {"security.protocol": "sasl_ssl"})
    assert calls == [broker, broker]  # unanswered, then answered; the third was remembered


def test_child_processes_get_the_uri_file_not_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's children read SM_MONGO_URI_FILE too; another URI clears the file."""
    uri = f"mongodb://svc:{_unique('pw')}@h:1/?tls=true"
    uri_file = tmp_path / "uri"
    uri_file.write_text(uri + "\n")
    monkeypatch.delenv("SM_MONGO_URI", raising=False)
    monkeypatch.setenv("SM_MONGO_URI_FILE", str(uri_file))
    assert mongo_uri_env(uri) == {"SM_MONGO_URI_FILE": str(uri_file), "SM_MONGO_URI": ""}
    stack = "mongodb://127.0.0.1:5/?directConnection=true"  # the local stack's, not the file's
    assert mongo_uri_env(stack) == {"SM_MONGO_URI": stack, "SM_MONGO_URI_FILE": ""}
    monkeypatch.setenv("SM_MONGO_URI_FILE", "")
    assert mongo_uri_env(uri) == {"SM_MONGO_URI": uri, "SM_MONGO_URI_FILE": ""}


@pytest.mark.parametrize("role", ["smReconcile", "smController"])
def test_documented_roles_may_read_the_oplog_for_capture_lag(role: str) -> None:
    """The reconciler and the gate read local.oplog.rs; their documented roles grant it."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "secured-clusters.md").read_text()
    block = doc.split(f'role: "{role}"', 1)[1].split("db.createRole", 1)[0]
    grant = '{ resource: { db: "local", collection: "oplog.rs" }, actions: ["find"] }'
    assert grant in block


def test_redact_text_masks_userinfo_only_inside_one_uri() -> None:
    """A password is what stands between ``user:`` and ``@`` of one URI, never across text.

    Every command's output goes through redact_text: a JSON document with a
    ``SASL_SSL://host:port`` bootstrap and a username holding an ``@`` further on
    must come out unchanged, not cut from the port to that ``@``.
    """
    config = (
        '{"kafka_bootstrap": "SASL_SSL://broker.corp:9093", "kafka_security_protocol": '
        '"sasl_ssl", "kafka_sasl_username": "svc-migrator@corp.example"}'
    )
    assert redact_text(config) == config
    assert redact_text("see http://broker:9093 and\nmail ops@corp.example") == (
        "see http://broker:9093 and\nmail ops@corp.example"
    )
    masked = redact_text("failed: http://svc:hunter22@proxy.corp:3128/x, retrying")
    assert masked == f"failed: http://svc:{MASK}@proxy.corp:3128/x, retrying"
