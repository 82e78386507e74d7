"""Secrets out of everything the processes print: URIs, Kafka properties, free text.

One place decides what a secret is, and every output goes through it: the
start-up log line and ``config`` (:func:`redact_uri`, :func:`redact_properties`),
and every log event and everything a command prints (:func:`redact_text`, fed by
:func:`register_secret` when the settings are loaded; :func:`redacted_output`). Driver errors quote
URIs and options verbatim, so masking the settings alone is not enough: the
values themselves are scrubbed from any text on its way out.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, TextIO, cast
from urllib.parse import unquote

MASK = "***"

#: MongoDB URI options whose value is a secret although their name does not say so
#: (lower case; URI options are case-insensitive): ``authMechanismProperties``
#: carries AWS session tokens. Any option named like a secret (``proxyPassword``,
#: ``tlsCertificateKeyFilePassword``, a future ``...Token``) is one too:
#: :func:`_is_secret_option`.
_URI_SECRET_OPTIONS = frozenset({"authmechanismproperties"})
#: ``authMechanismProperties`` keys whose values are public, and short or common
#: enough ("mongodb", "true", "azure") that scrubbing them would mangle every line.
#: Every other key's value (``AWS_SESSION_TOKEN``, any future one) is a secret.
_PUBLIC_AUTH_PROPERTIES = frozenset(
    {
        "service_name",
        "service_realm",
        "service_host",
        "canonicalize_host_name",
        "environment",
        "allowed_hosts",
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

#: ``scheme://user:password@`` of one URI: user and password stop at white space and
#: quotes, so the match never runs across text to a later ``@`` (an e-mail address
#: further on); the lookbehind keeps it from restarting inside a scheme (linear time).
_USERINFO = re.compile(
    r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)"
    r"(?P<user>[^:/@?#\s\"']*):(?P<pw>[^@/?#\s\"']*)@",
    re.I,
)
_OPTION = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&;#]+)=(?P<value>[^&;#]*)")
#: A MongoDB connection string quoted in free text (a driver error, an exception);
#: it ends at a quote or a backslash too, as inside a rendered JSON log line.
_MONGO_URI = re.compile(r"mongodb(?:\+srv)?://[^\s'\"`<>\\]+", re.I)

_lock = threading.Lock()
_secrets: set[str] = set()


def is_sensitive_property(name: str) -> bool:
    """True when a Kafka client property (or any ``name=value`` key) holds a secret."""
    key = name.strip().lower()
    return key in _KAFKA_SECRET_PROPERTIES or any(p in key for p in _SECRET_NAME_PARTS)


def _is_secret_option(name: str) -> bool:
    return name.strip().lower() in _URI_SECRET_OPTIONS or is_sensitive_property(name)


def uri_secrets(uri: str) -> list[str]:
    """The secret values in a MongoDB URI: its password and sensitive option values.

    Each ``authMechanismProperties`` value (the token of ``AWS_SESSION_TOKEN:...``)
    is one too, since a driver may quote it alone. Both the percent-encoded form
    (as written) and the decoded one (as a driver may quote it) are returned.
    """
    found: list[str] = []
    userinfo = _USERINFO.search(uri)
    if userinfo and userinfo.group("pw"):
        found.append(userinfo.group("pw"))
    for option in _OPTION.finditer(uri):
        name, value = option.group("name"), option.group("value")
        if not value or not _is_secret_option(name):
            continue
        found.append(value)
        if name.lower() == "authmechanismproperties":
            for prop in unquote(value).split(","):
                key, _, inner = prop.partition(":")
                if inner and key.strip().lower() not in _PUBLIC_AUTH_PROPERTIES:
                    found.append(inner)
    return [form for value in found for form in {value, unquote(value)}]


def redact_uri(uri: str) -> str:
    """``uri`` with its password and every sensitive query option masked."""
    masked = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", uri)

    def option(m: re.Match[str]) -> str:
        if _is_secret_option(m.group("name")):
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
    """``text`` with every registered secret masked, and any URI's password and sensitive
    options (of a MongoDB URI: :func:`redact_uri`), registered or not."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _MONGO_URI.sub(lambda m: redact_uri(m.group(0)), text)
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)


class _RedactingStream:
    """A text stream that writes what it is given through :func:`redact_text`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """Everything written to ``sys.stdout`` and ``sys.stderr`` meanwhile goes through
    :func:`redact_text`: the one place a command's output and errors leave the process."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, _RedactingStream(out))
    sys.stderr = cast(TextIO, _RedactingStream(err))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


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
