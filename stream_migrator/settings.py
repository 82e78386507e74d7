"""Process settings: the one place the environment is read.

Every setting is documented where it is declared; ``stream-migrator config``
prints them and the configuration reference in docs/operating.md is checked against this model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_migrator.errors import ConfigError
from stream_migrator.hook_policy import HookPolicy
from stream_migrator.kafka_security import kafka_security_properties, read_properties_file
from stream_migrator.redact import (
    MASK,
    is_sensitive_property,
    redact_properties,
    redact_uri,
    register_secret,
    show_document_values,
    uri_secrets,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def _cli(flag: str) -> dict[str, Any]:
    """Marks a setting that every process command also takes as a command-line flag."""
    return {"cli_flag": flag}


class Settings(BaseSettings):
    """Settings shared by capture, transform and demo; read from ``SM_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="SM_", frozen=True, extra="forbid")

    mongo_uri: SecretStr = Field(
        SecretStr("mongodb://127.0.0.1:27017/?directConnection=true"),
        description="MongoDB connection string for source, target and metadata.",
        json_schema_extra=_cli("--mongo-uri"),
    )
    mongo_uri_file: str = Field(
        "",
        description="Path of a file holding the MongoDB connection string (e.g. a mounted "
        "Secret), so it never appears in the environment or on a command line; replaces "
        "SM_MONGO_URI.",
        json_schema_extra=_cli("--mongo-uri-file"),
    )
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated.",
        json_schema_extra=_cli("--kafka-bootstrap"),
    )
    kafka_security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = Field(
        "plaintext",
        description="librdkafka security.protocol of every Kafka client (producer, consumer, "
        "admin): plaintext, ssl, sasl_plaintext or sasl_ssl.",
    )
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "",
        description="sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with a "
        "sasl_* protocol; other mechanisms such as OAUTHBEARER through SM_KAFKA_CONFIG_FILE).",
    )
    kafka_sasl_username: str = Field("", description="sasl.username.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="sasl.password (a secret).")
    kafka_ssl_ca_location: str = Field(
        "", description="ssl.ca.location: PEM file of the CA that signed the brokers' certificates."
    )
    kafka_ssl_certificate_location: str = Field(
        "", description="ssl.certificate.location: this client's PEM certificate (mutual TLS)."
    )
    kafka_ssl_key_location: str = Field(
        "", description="ssl.key.location: this client's PEM private key (mutual TLS)."
    )
    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="ssl.key.password of the private key (a secret)."
    )
    kafka_config_file: str = Field(
        "",
        description="A librdkafka properties file (key=value lines) for any other client "
        "property (OAUTHBEARER, ssl.endpoint.identification.algorithm, ...); values of "
        "sensitive keys are treated as secrets; the SM_KAFKA_* settings above override it.",
    )
    migration: str = Field(
        "orders-v2",
        description="Migration name; names topics, consumer group and checkpoints.",
        json_schema_extra=_cli("--migration"),
    )
    source: str = Field(
        "shop.orders",
        description="Source collection as <db>.<collection>.",
        json_schema_extra=_cli("--source"),
    )
    target: str = Field(
        "shop.orders_v2",
        description="Target collection as <db>.<collection>.",
        json_schema_extra=_cli("--target"),
    )
    spec: str = Field(
        "orders.v1_to_v2",
        description="Migration spec: a built-in name (orders.v1_to_v2) or a spec YAML path.",
        json_schema_extra=_cli("--spec"),
    )
    metadata_db: str = Field(
        "stream_migrator", description="Database holding the capture checkpoints."
    )
    partitions: int = Field(
        6,
        ge=1,
        le=1024,
        description="Partitions of the change topic.",
        json_schema_extra=_cli("--partitions"),
    )
    batch_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Max events per transform batch (one bulk write).",
        json_schema_extra=_cli("--batch-size"),
    )
    batch_timeout_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Max seconds a transform worker waits for the first event when none is "
        "fetched; a batch never waits to fill (it takes what is fetched, up to "
        "SM_BATCH_SIZE).",
    )
    checkpoint_interval_s: float = Field(
        1.0, gt=0, le=300, description="Seconds between capture resume-token checkpoints."
    )
    max_docs_per_second: float = Field(
        0,
        ge=0,
        description="Snapshot copy rate ceiling in documents per second; 0 = no cap.",
        json_schema_extra=_cli("--max-docs-per-second"),
    )
    snapshot_max_lag: int = Field(
        100_000,
        ge=0,
        description="Pause the snapshot while the transform group lags more events than "
        "this (gh-ost style back-off); 0 = never pause.",
    )
    snapshot_parallelism: int = Field(
        1,
        ge=1,
        le=64,
        description="`_id` ranges the snapshot reads at once (split by `splitVector`, else "
        "by a `$sample` of ids); fixed when the snapshot starts, resumed per range. "
        "1 = one `_id`-ordered scan.",
        json_schema_extra=_cli("--snapshot-parallelism"),
    )
    max_event_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="Largest envelope produced to Kafka; bigger events go to quarantine. "
        "Keep it at or below the topic's max.message.bytes.",
    )
    tombstone_retention_s: float = Field(
        30 * 86400,
        ge=0,
        description="Seconds a delete's tombstone is kept to refuse late replayed inserts; "
        "0 = forever (no purge). Must exceed how long the changes and quarantine topics "
        "keep events (retention.ms + segment.ms; Kafka's defaults: 14 days): the worker "
        "checks the topics at start and refuses to run otherwise.",
    )
    write_guard: Literal["auto", "filter", "cas"] = Field(
        "auto",
        description="How target writes enforce the version guard, both atomic per document: "
        "filter (the version test in the write's filter; MongoDB), cas (compare-and-set on "
        "the version read; mongo-java-server), or auto (detect).",
    )
    input_format: Literal["envelope", "mongo-connector"] = Field(
        "envelope",
        description="What the transform worker reads from the change topic: envelope "
        "(written by capture) or mongo-connector (the MongoDB Kafka source connector's "
        "Extended JSON change events, connectors/mongo-source.json).",
    )
    output: Literal["mongodb", "kafka-sink-topic"] = Field(
        "mongodb",
        description="Where the transform worker writes: mongodb (version-guarded writes to "
        "the target) or kafka-sink-topic (records for the MongoDB sink connector, "
        "connectors/mongo-sink.json; no version guard, see docs/kafka-connect.md).",
    )
    sink_topic: str = Field(
        "",
        description="Topic of the transformed documents when SM_OUTPUT=kafka-sink-topic; "
        "empty = sm.<migration>.sink.",
    )
    allow_hooks: bool = Field(
        False,
        description="Let specs import their Python hooks (computed, hook, filter.hook): a hook "
        "runs arbitrary code, so a spec's hooks are refused unless allowed here or listed in "
        "SM_HOOKS_ALLOWED.",
        json_schema_extra=_cli("--allow-hooks"),
    )
    hooks_allowed: str = Field(
        "",
        description="Comma-separated module names whose spec hooks may be imported (and their "
        "submodules), when SM_ALLOW_HOOKS is false.",
    )
    log_document_values: bool = Field(
        True,
        description="Show document values in quarantine reasons and log lines (each cut to "
        "64 characters); false shows only their BSON types, so no document content is "
        "logged.",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of /metrics and /healthz; 0 picks a free port.",
        json_schema_extra=_cli("--metrics-port"),
    )
    metrics_host: str = Field("127.0.0.1", description="Address /metrics and /healthz bind to.")
    log_level: str = Field(
        "info",
        description="Log level: debug, info, warning, error.",
        json_schema_extra=_cli("--log-level"),
    )

    @model_validator(mode="before")
    @classmethod
    def _uri_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("mongo_uri_file"):
            return data
        path = str(data["mongo_uri_file"])
        given = data.get("mongo_uri")
        if isinstance(given, SecretStr):
            given = given.get_secret_value()
        uri = _read_uri_file(path)
        if given and given != uri:
            raise ConfigError(
                f"both SM_MONGO_URI and SM_MONGO_URI_FILE={path} are set: keep one "
                "(the file keeps the URI off command lines and out of the environment)"
            )
        return {**data, "mongo_uri": uri}

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        kafka_security_properties(self)  # raises ConfigError naming the setting
        return self

    @field_validator("source", "target")
    @classmethod
    def _namespace(cls, value: str) -> str:
        db, _, coll = value.partition(".")
        if not db or not coll:
            raise ValueError(f"{value!r} is not <db>.<collection>")
        return value

    @field_validator("migration")
    @classmethod
    def _migration_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} must be 1-63 letters, digits, '_' or '-' (it names Kafka topics)"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError(f"{value!r} is not one of debug, info, warning, error")
        return value.lower()

    @property
    def changes_topic(self) -> str:
        return f"sm.{self.migration}.changes"

    @property
    def quarantine_topic(self) -> str:
        return f"sm.{self.migration}.quarantine"

    @property
    def consumer_group(self) -> str:
        return f"sm.{self.migration}.transform"

    def split_ns(self, ns: str) -> tuple[str, str]:
        db, _, coll = ns.partition(".")
        return db, coll

    @property
    def hook_policy(self) -> HookPolicy:
        """Which spec hook modules this process may import."""
        return HookPolicy.of(self.allow_hooks, self.hooks_allowed.split(","))

    @property
    def kafka_client(self) -> dict[str, str]:
        """The librdkafka security properties every Kafka client of this process takes."""
        return kafka_security_properties(self)

    def masked(self) -> dict[str, Any]:
        """The effective settings with secrets masked, for the start-up log line."""
        data = self.model_dump()
        data["mongo_uri"] = redact_uri(self.mongo_uri.get_secret_value())
        for name, value in data.items():
            if isinstance(value, SecretStr):
                data[name] = MASK if value.get_secret_value() else ""
        if self.kafka_config_file:
            data["kafka_config_file_properties"] = redact_properties(
                read_properties_file(self.kafka_config_file)
            )
        return data

    def register_secrets(self) -> None:
        """Scrub this process's secrets from every log line and CLI error from now on."""
        for secret in uri_secrets(self.mongo_uri.get_secret_value()):
            register_secret(secret)
        register_secret(self.kafka_sasl_password.get_secret_value())
        register_secret(self.kafka_ssl_key_password.get_secret_value())
        if self.kafka_config_file:
            for key, value in read_properties_file(self.kafka_config_file).items():
                if is_sensitive_property(key):
                    register_secret(value)


def _read_uri_file(path: str) -> str:
    try:
        uri = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"SM_MONGO_URI_FILE={path}: cannot read the file: {exc.strerror or exc}"
        ) from None
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(
            f"SM_MONGO_URI_FILE={path}: the file does not hold a MongoDB connection "
            "string (expected mongodb:// or mongodb+srv://)"
        )
    return uri


def mongo_uri_env(uri: str) -> dict[str, str]:
    """The ``SM_MONGO_URI*`` variables that give a child process ``uri``.

    The file, when ``uri`` is what this process's SM_MONGO_URI_FILE holds, so the
    URI stays out of the child's environment (``ps e``, ``/proc/PID/environ``);
    else the URI itself, with an inherited file cleared so the two cannot conflict.
    """
    path = os.environ.get("SM_MONGO_URI_FILE", "")
    if path and _read_uri_file(path) == uri:
        return {"SM_MONGO_URI_FILE": path, "SM_MONGO_URI": ""}
    return {"SM_MONGO_URI": uri, "SM_MONGO_URI_FILE": ""}


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus CLI overrides; bad values raise ConfigError."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**clean)
    except ValueError as exc:  # pydantic.ValidationError subclasses ValueError
        lines = []
        for err in getattr(exc, "errors", lambda: [])():
            where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            lines.append(f"SM_{where.upper()} ({where}): {err.get('msg')}")
        detail = "; ".join(lines) or str(exc)
        raise ConfigError(f"invalid configuration: {detail}") from exc
    settings.register_secrets()
    show_document_values(settings.log_document_values)
    return settings


def cli_flags() -> dict[str, str]:
    """Setting name -> its command-line flag, for the settings that have one."""
    flags = {}
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("cli_flag"), str):
            flags[name] = str(extra["cli_flag"])
    return flags


def reference_table() -> str:
    """docs/operating.md's settings table, generated from the model (a test keeps them equal)."""
    flags = cli_flags()
    rows = ["| Variable | CLI flag | Default | Meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        flag = f"`{flags[name]}`" if name in flags else ""
        rows.append(f"| `SM_{name.upper()}` | {flag} | `{default}` | {field.description} |")
    return "\n".join(rows)
