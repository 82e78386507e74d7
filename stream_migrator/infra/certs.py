"""Throw-away TLS material for the local secured listeners (tests, demos): never for production.

A private CA signs one server certificate for the loopback address. The Kafka
broker gets a PKCS12 keystore made with the JDK's ``keytool`` (what a Kafka
operator would use); TLS terminators such as stunnel get PEM files made with
``openssl``. Clients trust the CA through its PEM file.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stream_migrator.errors import InfraError

_DAYS = "7"


@dataclass(frozen=True)
class KeystoreMaterial:
    """A CA (PEM) and a server keystore (PKCS12) signed by it."""

    ca_pem: Path
    keystore: Path
    password: str


@dataclass(frozen=True)
class PemMaterial:
    """A CA (PEM) and a server certificate + private key (one PEM file) signed by it."""

    ca_pem: Path
    server_pem: Path


def _run(argv: list[str], what: str, stdin: str | None = None) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise InfraError(f"{argv[0]} is not installed; it is needed to {what}")
    done = subprocess.run(
        [tool, *argv[1:]], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise InfraError(f"{what} failed ({argv[0]}): {(done.stderr or done.stdout)[-400:]}")


def keytool_keystore(directory: Path, host: str = "127.0.0.1") -> KeystoreMaterial:
    """A CA and a PKCS12 keystore for ``host`` (IP SAN), made with keytool."""
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    ca_store, keystore = directory / "ca.p12", directory / "server.p12"
    ca_pem, csr, cert = directory / "ca.pem", directory / "server.csr", directory / "server.crt"
    for path in (ca_store, keystore):
        path.unlink(missing_ok=True)
    common = ["-storetype", "PKCS12", "-storepass", password, "-keyalg", "RSA", "-keysize", "2048"]
    what = "make the test CA and keystore"
    _run(
        ["keytool", "-genkeypair", "-keystore", str(ca_store), "-alias", "ca", *common,
         "-dname", "CN=stream-migrator test CA", "-validity", _DAYS, "-ext", "bc:c"],
        what,
    )  # fmt: skip
    _run(
        ["keytool", "-exportcert", "-keystore", str(ca_store), "-storepass", password,
         "-alias", "ca", "-rfc", "-file", str(ca_pem)],
        what,
    )  # fmt: skip
    _run(
        ["keytool", "-genkeypair", "-keystore", str(keystore), "-alias", "server", *common,
         "-dname", f"CN={host}", "-validity", _DAYS],
        what,
    )  # fmt: skip
    _run(
        ["keytool", "-certreq", "-keystore", str(keystore), "-storepass", password,
         "-alias", "server", "-file", str(csr)],
        what,
    )  # fmt: skip
    _run(
        ["keytool", "-gencert", "-keystore", str(ca_store), "-storepass", password,
         "-alias", "ca", "-infile", str(csr), "-outfile", str(cert), "-rfc",
         "-validity", _DAYS, "-ext", f"SAN=IP:{host},DNS:localhost"],
        what,
    )  # fmt: skip
    for alias, path in (("ca", ca_pem), ("server", cert)):
        _run(
            ["keytool", "-importcert", "-noprompt", "-keystore", str(keystore),
             "-storepass", password, "-alias", alias, "-file", str(path)],
            what,
        )  # fmt: skip
    return KeystoreMaterial(ca_pem, keystore, password)


def openssl_pem(directory: Path, host: str = "127.0.0.1") -> PemMaterial:
    """A CA and a server certificate + key for ``host`` (IP SAN), as PEM, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    what = "make the test CA and server certificate"
    _run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
         "-out", str(ca_pem), "-days", _DAYS, "-subj", "/CN=stream-migrator test CA"],
        what,
    )  # fmt: skip
    _run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(csr), "-subj", f"/CN={host}"],
        what,
    )  # fmt: skip
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    _run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", _DAYS, "-extfile", str(ext)],
        what,
    )  # fmt: skip
    server_pem = directory / "server.pem"
    server_pem.write_text(cert.read_text() + key.read_text())
    server_pem.chmod(0o600)
    return PemMaterial(ca_pem, server_pem)
