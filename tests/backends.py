"""Where the tests' real servers come from: env vars, Docker, or the local stack."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_STACK_DIR = REPO / ".sm" / "test-stack"


@dataclass(frozen=True)
class Backend:
    kind: str
    kafka_bootstrap: str
    mongo_uri: str


def choose_kind() -> str:
    """env if both SM_* are set, docker if an engine answers, else local."""
    if os.environ.get("SM_KAFKA_BOOTSTRAP") and os.environ.get("SM_MONGO_URI"):
        return "env"
    if os.environ.get("SM_TEST_BACKEND") in {"local", "docker"}:
        return os.environ["SM_TEST_BACKEND"]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=20)
        if probe.returncode == 0:
            return "docker"
    return "local"


def describe(kind: str) -> str:
    return {
        "env": "existing servers from SM_KAFKA_BOOTSTRAP / SM_MONGO_URI",
        "docker": "testcontainers: MongoDB replica set + Apache Kafka images",
        "local": f"local stack: Kafka (KRaft) + mongo-java-server in {TEST_STACK_DIR}",
    }[kind]


@contextlib.contextmanager
def start(kind: str) -> Iterator[Backend]:
    if kind == "env":
        yield Backend("env", os.environ["SM_KAFKA_BOOTSTRAP"], os.environ["SM_MONGO_URI"])
    elif kind == "docker":
        with _docker() as backend:
            yield backend
    else:
        from stream_migrator.infra import LocalStack

        stack = LocalStack(TEST_STACK_DIR)
        stack.up(quiet=True)
        try:
            yield Backend("local", stack.kafka_bootstrap(), stack.mongo_uri())
        finally:
            stack.down()


@contextlib.contextmanager
def _docker() -> Iterator[Backend]:  # pragma: no cover - needs a Docker engine
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    mongo = DockerContainer("mongo:7.0").with_command("--replSet rs0 --bind_ip_all")
    mongo.with_exposed_ports(27017)
    with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka, mongo:
        wait_for_logs(mongo, "Waiting for connections")
        mongo.exec(
            [
                "mongosh",
                "--quiet",
                "--eval",
                "rs.initiate({_id:'rs0',members:[{_id:0,host:'localhost:27017'}]})",
            ]
        )
        host, port = mongo.get_container_host_ip(), mongo.get_exposed_port(27017)
        yield Backend(
            "docker",
            kafka.get_bootstrap_server(),
            f"mongodb://{host}:{port}/?directConnection=true",
        )
