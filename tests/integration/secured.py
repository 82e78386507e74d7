"""Secured servers for the tests: Kafka with a SASL_SSL listener, MongoDB behind TLS (stunnel)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo import uri_parser

from stream_migrator.infra.certs import openssl_pem
from stream_migrator.infra.probes import free_port
from stream_migrator.infra.stack import LocalStack, ScramUser
from tests.backends import Backend

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
        shutil.rmtree(stack.state_dir, ignore_errors=True)


@dataclass(frozen=True)
class TlsMongo:
    """A TLS terminator (stunnel) in front of the stand-in: the URIs that reach it."""

    port: int
    ca_file: Path

    def uri(self, ca_file: Path | None = None) -> str:
        """A TLS connection string through the terminator, trusting ``ca_file`` (default: right)."""
        ca = ca_file or self.ca_file
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&tls=true&tlsCAFile={ca}"


@pytest.fixture(scope="module")
def tls_mongo(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMongo]:
    """stunnel accepting TLS on a free port and forwarding to the session's MongoDB server."""
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if stunnel is None:
        pytest.fail("stunnel4 is not installed: run `make ops-tools` (Debian package stunnel4)")
    host, port = uri_parser.parse_uri(backend.mongo_uri)["nodelist"][0]
    directory = tmp_path_factory.mktemp("tls-mongo")
    pem = openssl_pem(directory / "tls")
    accept = free_port()
    config = directory / "stunnel.conf"
    config.write_text(
        "foreground = yes\npid =\ndebug = 4\n"
        f"[mongo]\naccept = 127.0.0.1:{accept}\nconnect = {host}:{port}\ncert = {pem.server_pem}\n"
    )
    log = (directory / "stunnel.log").open("wb")
    proc = subprocess.Popen([stunnel, str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", accept), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"stunnel did not start: {(directory / 'stunnel.log').read_text()}")
                time.sleep(0.1)
        yield TlsMongo(accept, pem.ca_pem)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
