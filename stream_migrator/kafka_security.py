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

import os
from pathlib import Path
from typing import TYPE_CHECKING

from stream_migrator.errors import ConfigError

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
