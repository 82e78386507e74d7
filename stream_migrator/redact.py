"""Secrets out of everything the processes print: URIs, Kafka properties, free text.

One place decides what a secret is, and every output goes through it: the
start-up log line and ``config`` (:func:`redact_uri`, :func:`redact_properties`),
and every log event and CLI error (:func:`redact_text`, fed by
:func:`register_secret` when the settings are loaded). Driver errors quote
URIs and options verbatim, so masking the settings alone is not enough: the
values themselves are scrubbed from any text on its way out.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

MASK = "***"

#: MongoDB URI options whose value is a secret (lower case; URI options are
#: case-insensitive). ``authMechanismProperties`` carries AWS session tokens.
_URI_SECRET_OPTIONS = frozenset(
    {
        "authmechanismproperties",
        "tlscertificatekeyfilepassword",
        "sslclientcertificatekeypassword",
        "sslpemkeypassword",
        "password",
    }
)
#: librdkafka property names holding secrets, and name parts that mark one.
_KAFKA_SECRET_PROPERTIES = frozenset(
    {
        "sasl.password",
        "sasl.jaas.config",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_key",
        "ssl.keystore.password",
        "ssl.truststore.password",
    }
)
_SECRET_NAME_PARTS = ("password", "secret", "token", "credential", "jaas")
#: Values shorter than this are not scrubbed from free text: a two-letter
#: "secret" would mangle every log line and hides nothing anyway.
MIN_SCRUBBED_LENGTH = 4

_USERINFO = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@?#]*):(?P<pw>[^@/?#]*)@", re.I
)
_OPTION = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&;#]+)=(?P<value>[^&;#]*)")

_lock = threading.Lock()
_secrets: set[str] = set()


def is_sensitive_property(name: str) -> bool:
    """True when a Kafka client property (or any ``name=value`` key) holds a secret."""
    key = name.strip().lower()
    return key in _KAFKA_SECRET_PROPERTIES or any(p in key for p in _SECRET_NAME_PARTS)


def uri_secrets(uri: str) -> list[str]:
    """The secret values in a MongoDB URI: its password and sensitive option values.

    Both the percent-encoded form (as written) and the decoded one (as a driver
    may quote it) are returned.
    """
    found: list[str] = []
    userinfo = _USERINFO.search(uri)
    if userinfo and userinfo.group("pw"):
        found.append(userinfo.group("pw"))
    for option in _OPTION.finditer(uri):
        if option.group("name").lower() in _URI_SECRET_OPTIONS and option.group("value"):
            found.append(option.group("value"))
    return [form for value in found for form in {value, unquote(value)}]


def redact_uri(uri: str) -> str:
    """``uri`` with its password and every sensitive query option masked."""
    masked = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", uri)

    def option(m: re.Match[str]) -> str:
        if m.group("name").lower() in _URI_SECRET_OPTIONS:
            return f"{m.group('sep')}{m.group('name')}={MASK}"
        return m.group(0)

    return _OPTION.sub(option, masked)


def redact_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of Kafka client ``properties`` with every sensitive value masked."""
    return {
        k: (MASK if is_sensitive_property(k) and v not in (None, "") else v)
        for k, v in properties.items()
    }


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from every text that :func:`redact_text` sees from now on."""
    if value and len(value) >= MIN_SCRUBBED_LENGTH:
        with _lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    """``text`` with every registered secret, and any URI password, masked."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)


def redact_value(value: Any) -> Any:
    """:func:`redact_text` applied through strings, lists, tuples and dicts (log events)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_log_event(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every field of every log event goes through :func:`redact_value`."""
    return {k: redact_value(v) for k, v in event.items()}


#: How much of a document value an error message (a quarantine reason, a log line) shows.
MAX_VALUE_CHARS = 64
_document_values = [True]  # one process-wide switch, like the log configuration


def show_document_values(enabled: bool) -> None:
    """Whether messages show document values (bounded) or only their types (``False``)."""
    _document_values[0] = enabled


def document_values_shown() -> bool:
    """See :func:`show_document_values` (``SM_LOG_DOCUMENT_VALUES``)."""
    return _document_values[0]
