"""Kafka client security: the librdkafka properties built from the SM_KAFKA_* settings.

Every Kafka client of every process (producer, consumer, admin) takes the same
properties, from :func:`kafka_security_properties`. A properties file
(``SM_KAFKA_CONFIG_FILE``) carries anything without a setting of its own
(OAUTHBEARER, ``ssl.endpoint.identification.algorithm``, ...); the settings
override it when they are set (a protocol other than the default plaintext, a
non-empty value). Checked when the settings are loaded, so a bad
configuration stops the process before it touches data.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_migrator.errors import ConfigError, InfraError

if TYPE_CHECKING:
    from stream_migrator.settings import Settings

#: Properties the pipeline's guarantees depend on: not taken from the file.
_OWNED = {
    "bootstrap.servers": "set SM_KAFKA_BOOTSTRAP instead",
    "group.id": "the consumer group is named after the migration",
    "enable.auto.commit": "offsets are committed only after the target write",
    "enable.auto.offset.store": "offsets are committed only after the target write",
    "enable.idempotence": "capture's producer is idempotent by design",
    "acks": "capture's producer waits for every in-sync replica",
    "auto.offset.reset": "a new group reads the topic from its start",
    "partition.assignment.strategy": "the worker relies on cooperative rebalancing",
}
#: Setting -> librdkafka property, for the settings that map one to one.
_MAPPED = {
    "kafka_sasl_mechanism": "sasl.mechanism",
    "kafka_sasl_username": "sasl.username",
    "kafka_sasl_password": "sasl.password",
    "kafka_ssl_ca_location": "ssl.ca.location",
    "kafka_ssl_certificate_location": "ssl.certificate.location",
    "kafka_ssl_key_location": "ssl.key.location",
    "kafka_ssl_key_password": "ssl.key.password",
}
_FILES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")


def read_properties_file(path: str) -> dict[str, str]:
    """``key=value`` lines of a librdkafka properties file (``#``/``!`` comments).

    Raises ConfigError naming the file and line of anything wrong.
    """
    where = f"SM_KAFKA_CONFIG_FILE={path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file: {exc.strerror or exc}") from None
    props: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{where}:{number}: expected key=value, got {line[:40]!r}")
        if key in _OWNED:
            raise ConfigError(
                f"{where}:{number}: {key} is set by stream-migrator ({_OWNED[key]}); "
                "remove it from the file"
            )
        props[key] = value.strip()
    return props


def kafka_security_properties(settings: Settings) -> dict[str, str]:
    """The security properties of every Kafka client; ConfigError names a bad setting."""
    props = read_properties_file(settings.kafka_config_file) if settings.kafka_config_file else {}
    # The default (plaintext) does not override a protocol the file sets.
    if settings.kafka_security_protocol != "plaintext" or "security.protocol" not in props:
        props["security.protocol"] = settings.kafka_security_protocol
    for field, name in _MAPPED.items():
        value = getattr(settings, field)
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        if text:
            props[name] = text
    _check(props)
    return props


def _check(props: dict[str, str]) -> None:
    protocol = props["security.protocol"].lower()
    known = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
    if protocol not in known:
        raise ConfigError(
            f"security.protocol={props['security.protocol']!r} (SM_KAFKA_CONFIG_FILE) is not "
            f"one of {', '.join(known)}"
        )
    if protocol.startswith("sasl"):
        mechanism = props.get("sasl.mechanism") or props.get("sasl.mechanisms")
        if not mechanism:
            raise ConfigError(
                f"SM_KAFKA_SECURITY_PROTOCOL={protocol} needs SM_KAFKA_SASL_MECHANISM "
                "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        if mechanism.upper() in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            for name, setting in (
                ("sasl.username", "SM_KAFKA_SASL_USERNAME"),
                ("sasl.password", "SM_KAFKA_SASL_PASSWORD"),
            ):
                if not props.get(name):
                    raise ConfigError(
                        f"SM_KAFKA_SASL_MECHANISM={mechanism} needs {setting} (sasl.{name[5:]})"
                    )
    else:
        stray = sorted(k for k in props if k.startswith("sasl."))
        if stray:
            raise ConfigError(
                f"{', '.join(stray)} set, but SM_KAFKA_SECURITY_PROTOCOL={protocol} does not "
                "use SASL: set it to sasl_ssl (or sasl_plaintext)"
            )
    if not protocol.endswith("ssl"):
        stray = sorted(k for k in props if k.startswith("ssl."))
        if stray:
            raise ConfigError(
                f"{', '.join(stray)} set, but SM_KAFKA_SECURITY_PROTOCOL={protocol} does not "
                "use TLS: set it to ssl or sasl_ssl"
            )
    for name in _FILES:
        path = props.get(name)
        if path and not os.access(path, os.R_OK):
            setting = "SM_KAFKA_" + name.upper().replace(".", "_")
            raise ConfigError(
                f"{setting}={path} ({name}): the file does not exist or is not readable"
            )


class _Captured(logging.Handler):
    """Collects librdkafka's log lines (they name the cause of a failed connection)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_kafka_access(bootstrap: str, properties: dict[str, str], timeout: float = 15.0) -> None:
    """Connect once with ``properties``; a refusal is one sentence naming the setting to fix.

    Run before a process touches any data: a wrong password, an untrusted CA or a
    plaintext client at a TLS listener then stop it with a ConfigError instead of
    an endless reconnect loop in the logs. A broker that does not answer at all is
    an InfraError (it may be down, not misconfigured).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    captured = _Captured()
    logger = logging.getLogger(f"stream_migrator.kafka_access.{id(captured)}")
    logger.setLevel(logging.DEBUG)  # librdkafka reports a refused connection at INFO
    logger.propagate = False
    logger.addHandler(captured)
    errors: list[str] = []
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **properties,
        "logger": logger,
        "error_cb": lambda err: errors.append(str(err)),
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                admin.list_topics(timeout=min(1.0, timeout))
                return
            except KafkaException as exc:
                failure = str(exc.args[0] if exc.args else exc)
            admin.poll(0)  # serve the log and error callbacks
            problem = _access_error(bootstrap, properties, " | ".join(captured.lines + errors))
            if problem is not None:
                raise problem
            if time.monotonic() >= deadline:
                raise InfraError(
                    f"Kafka at {bootstrap} did not answer within {timeout:g} s ({failure}); "
                    "is SM_KAFKA_BOOTSTRAP right and the broker up?"
                )
    finally:
        logger.removeHandler(captured)


def _access_error(bootstrap: str, props: dict[str, str], detail: str) -> ConfigError | None:
    """The misconfiguration librdkafka's log lines point at, if any."""
    protocol = props.get("security.protocol", "plaintext").lower()
    if "SASL authentication error" in detail or "Authentication failed" in detail:
        return ConfigError(
            f"Kafka at {bootstrap} refused the login of SM_KAFKA_SASL_USERNAME="
            f"{props.get('sasl.username', '')!r} with SM_KAFKA_SASL_MECHANISM="
            f"{props.get('sasl.mechanism', '')}: check SM_KAFKA_SASL_PASSWORD (and the mechanism)"
        )
    if "certificate verify failed" in detail:
        ca = props.get("ssl.ca.location", "the system CA store")
        return ConfigError(
            f"the TLS certificate of Kafka at {bootstrap} is not signed by a CA in "
            f"SM_KAFKA_SSL_CA_LOCATION={ca}: give the PEM file of the CA that signed it"
        )
    if "SSL handshake failed" in detail:
        return ConfigError(
            f"TLS to Kafka at {bootstrap} failed ({_first(detail, 'SSL')}): check "
            "SM_KAFKA_SECURITY_PROTOCOL and the SM_KAFKA_SSL_* files"
        )
    # Closed at the first request, again and again: a TLS listener. Once could be a broker
    # going down; a restarting one refuses the connection instead.
    closed_at_first_request = detail.count("APIVERSION_QUERY") + detail.count("ApiVersion")
    if protocol in ("plaintext", "sasl_plaintext") and closed_at_first_request >= 3:
        return ConfigError(
            f"Kafka at {bootstrap} closed the connection at the first request with "
            f"SM_KAFKA_SECURITY_PROTOCOL={protocol}: the listener likely expects TLS or "
            "SASL; set SM_KAFKA_SECURITY_PROTOCOL to ssl, sasl_ssl or sasl_plaintext"
        )
    return None


def _first(detail: str, needle: str) -> str:
    for part in detail.split(" | "):
        if needle in part:
            return part.split(": ", 2)[-1][:200]
    return detail[:200]
