"""Secrets never shown: every process and CLI verb, run with secrets set, prints none of them.

Normal operation runs through the secured listeners: Kafka over SASL_SSL (a SCRAM
password) and MongoDB over TLS with an encrypted client key (its password is a URI
option). The error paths run with a URI that carries a password and AWS session
token the stand-in cannot use (it has no authentication), so every verb fails the
way a misconfigured production run would. Everything written is searched.
"""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from confluent_kafka import Consumer
from pymongo import MongoClient

from stream_migrator.demo.data import seed
from stream_migrator.settings import Settings
from tests.integration.helpers import cli, settings_env
from tests.integration.processes import Proc
from tests.integration.rollout_plans import plan_file
from tests.integration.secured import SecureKafka, TlsMongo

PACKAGE = Path(__file__).resolve().parents[2] / "stream_migrator"
PLAN = (PACKAGE / "rollout" / "examples" / "plan.toml").read_text()


def _encrypted_client_pem(directory: Path, password: str) -> Path:
    """A client certificate whose private key is encrypted with ``password``."""
    key, cert, pem = directory / "client.key", directory / "client.crt", directory / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out",
         str(cert), "-days", "2", "-subj", "/CN=sm-client", "-passout", f"pass:{password}"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem.write_text(cert.read_text() + key.read_text())
    return pem


def _verbs(plan: Path, settings: Settings) -> list[list[str]]:
    """Every CLI verb that reads settings, as run by an operator (the demo aside: slow)."""
    migration = settings.migration
    return [
        ["config"],
        ["compare"],
        ["status", migration],
        ["status", migration, "--json"],
        ["reconcile", migration, "--json"],
        ["reconcile", migration, "--repair", "--json"],
        ["quarantine", "list"],
        ["quarantine", "show", "0:0"],
        ["quarantine", "replay"],
        ["spec", "check", "orders.v1_to_v2", "--source", settings.source, "--sample", "20",
         "--mongo-uri", settings.mongo_uri.get_secret_value()],
        ["plan", "validate", str(plan)],
        ["plan", "show", str(plan)],
        ["rollout", "status", str(plan), migration],
        ["audit", migration],
        ["infra", "status"],
    ]  # fmt: skip


def _rollout_verbs(plan: Path, migration: str) -> list[list[str]]:
    """The rollout verbs that change the state: run last, as they halt and roll back."""
    return [
        ["rollout", verb, str(plan), migration, "--reason", "leak test"]
        for verb in ("advance", "halt", "rollback")
    ]


def test_no_secret_in_any_output_of_processes_and_verbs(
    secure_kafka: SecureKafka,
    tls_mongo: TlsMongo,
    settings_kwargs: dict[str, Any],
    mongo_uri: str,
    tmp_path: Path,
) -> None:
    """capture, transform, reconcile --watch and each verb: 0 hits of any secret value."""
    key_password = f"tls-key-{uuid.uuid4().hex[:10]}"
    pem = _encrypted_client_pem(tmp_path, key_password)
    uri = (
        f"{tls_mongo.uri()}&tlsCertificateKeyFile={pem}"
        f"&tlsCertificateKeyFilePassword={quote(key_password)}"
    )
    settings = Settings(**{**settings_kwargs, **secure_kafka.settings(), "mongo_uri": uri})
    migration = settings.migration
    plan = plan_file(tmp_path, settings, advance_every=0.5)
    env = {**settings_env(settings), "SM_OPERATOR": "leak-test"}
    direct: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    db, coll = settings.split_ns(settings.source)
    seed(direct[db][coll], 200, 3, random.Random(5))  # 3 bad documents: quarantine
    outputs: list[str] = []
    procs = [Proc([role], env, tmp_path / f"{role}.log") for role in ("capture", "transform")]
    watch = Proc(["reconcile", migration, "--watch", "--interval", "1"], env, tmp_path / "w.log")
    procs.append(watch)
    try:
        tdb, tcoll = settings.split_ns(settings.target)
        deadline = time.monotonic() + 120
        while direct[tdb][tcoll].count_documents({}) < 200 - 3:
            for p in procs:
                p.assert_running()
            assert time.monotonic() < deadline, "the pipeline did not migrate through TLS/SASL"
            time.sleep(0.5)
        for args in _verbs(plan, settings):
            done = cli(*args, env=env, timeout=120)
            outputs.append(f"$ {_command(args)}\n{done.stdout}{done.stderr}")
        # The rollout's long-running processes: the controller (it advances, runs its
        # gate) and the reverse stream; a few seconds each is enough to log and fail.
        for args in (["rollout", "run", str(plan)], ["rollout", "reverse", str(plan), migration]):
            procs.append(Proc(args, env, tmp_path / f"{args[1]}.log"))
        time.sleep(8)
        for args in _rollout_verbs(plan, migration):
            done = cli(*args, env={**env, "SM_DRAIN_TIMEOUT_S": "10"}, timeout=120)
            outputs.append(f"$ {_command(args)}\n{done.stdout}{done.stderr}")
    finally:
        for p in procs:
            p.terminate()
            outputs.append(p.text())
    headers = _quarantine_headers(secure_kafka, settings)
    assert headers, "nothing was quarantined: the bad documents should be"
    everything = "\n".join([*outputs, *headers])
    assert "quarantine" in everything
    for secret in (key_password, quote(key_password), secure_kafka.user.password):
        assert secret not in everything, f"a secret leaked:\n{_around(everything, secret)}"
    direct.close()


def test_no_secret_in_errors_of_a_uri_with_password_and_session_token(
    settings_kwargs: dict[str, Any], mongo_uri: str, tmp_path: Path
) -> None:
    """Every verb and process fails against a URI it cannot use, and names no secret."""
    password, token = f"pw-{uuid.uuid4().hex[:10]}", f"FQoG{uuid.uuid4().hex}"
    host = mongo_uri.split("//", 1)[1].split("/", 1)[0]
    uri = (
        f"mongodb://svc:{password}@{host}/?directConnection=true&authMechanism=MONGODB-AWS"
        f"&authMechanismProperties=AWS_SESSION_TOKEN:{token}"
    )
    settings = Settings(**{**settings_kwargs, "mongo_uri": uri})
    env = settings_env(settings)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    outputs = []
    verbs = [*_verbs(plan, settings), *_rollout_verbs(plan, settings.migration)]
    for args in [["capture"], ["transform"], *verbs]:
        done = cli(*args, env=env, timeout=120)
        outputs.append(f"$ {_command(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    everything = "\n".join(outputs)
    assert everything.count("-> 0") < len(outputs)  # they did fail
    for secret in (password, token):
        assert secret not in everything, f"a secret leaked:\n{_around(everything, secret)}"


def _command(args: list[str]) -> str:
    """The command line for the record, without the URI it may carry (not the program's output)."""
    return " ".join("URI" if arg.startswith("mongodb") else arg for arg in args)


def _quarantine_headers(kafka: SecureKafka, settings: Settings) -> list[str]:
    consumer = Consumer(
        {
            **settings.kafka_client,
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"leak-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.quarantine_topic])
    found = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(found) < 3:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            found.append(repr(msg.headers()))
    consumer.close()
    return found


def _around(text: str, needle: str) -> str:
    i = text.find(needle)
    return text[max(0, i - 300) : i + 300]
