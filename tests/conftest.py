"""Session fixtures: one Kafka bootstrap and one MongoDB URI for every integration test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import backends
from tests.integration import processes

_KIND: str | None = None


def _kind() -> str:
    global _KIND  # noqa: PLW0603 - chosen once per session, shown in the header
    if _KIND is None:
        _KIND = backends.choose_kind()
    return _KIND


def pytest_report_header(config: pytest.Config) -> str:
    return f"stream-migrator test backend: {_kind()} ({backends.describe(_kind())})"


@pytest.fixture(scope="session")
def backend() -> Iterator[backends.Backend]:
    """The real servers for this session (started once, stopped at the end)."""
    with backends.start(_kind()) as b:
        yield b


@pytest.fixture
def kafka_bootstrap(backend: backends.Backend) -> str:
    return backend.kafka_bootstrap


@pytest.fixture
def mongo_uri(backend: backends.Backend) -> str:
    return backend.mongo_uri


@pytest.fixture
def unique() -> str:
    """A short unique name: each test gets its own topic, group and database."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=["filter", "cas"], ids=["filter", "cas"])
def write_guard(request: pytest.FixtureRequest) -> str:
    """The target writer's version guard; a test asking for it runs once per mode.

    ``filter`` is what MongoDB uses, ``cas`` what mongo-java-server is detected as;
    both must keep the same guarantees, so write-path tests run in both. A test that
    also uses ``settings_kwargs`` gets ``write_guard`` set there (subprocesses get it
    as ``SM_WRITE_GUARD`` through ``settings_env``).
    """
    return str(request.param)


@pytest.fixture
def settings_kwargs(
    kafka_bootstrap: str, mongo_uri: str, unique: str, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """Settings for one test: unique migration, database and metadata database."""
    guard = (
        {"write_guard": request.getfixturevalue("write_guard")}
        if "write_guard" in request.fixturenames
        else {}
    )
    return {
        **guard,
        "kafka_bootstrap": kafka_bootstrap,
        "mongo_uri": mongo_uri,
        "migration": f"t-{unique}",
        "source": f"db_{unique}.orders",
        "target": f"db_{unique}.orders_v2",
        "metadata_db": f"meta_{unique}",
        "partitions": 3,
        "checkpoint_interval_s": 0.2,
        "batch_timeout_s": 0.2,
    }


@pytest.fixture
def procs() -> Iterator[list[processes.Proc]]:
    """Children started by a test; any still running at the end are killed."""
    started: list[processes.Proc] = []
    yield started
    for p in started:
        if p.popen.poll() is None:
            p.popen.kill()
            p.popen.wait(10)
