"""Local-stack helpers that need no server: error wording, Java version parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_migrator.errors import InfraError
from stream_migrator.infra.jars import _explain_mvn_failure, _java_major
from stream_migrator.infra.stack import LocalStack, mongo_system_properties


def test_unreachable_registry_is_one_clear_sentence() -> None:
    """Maven's transfer failure becomes 'registry is unreachable' with Maven's first error."""
    mvn_output = (
        "[ERROR] Failed to execute goal on project local-stack: Could not resolve dependencies "
        "for project dev.streammigrator:local-stack:pom:0.1.0: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:4.3.1 from/to central: Unknown host repo.maven.apache.org"
    )
    message = _explain_mvn_failure(mvn_output)
    assert "Maven Central" in message
    assert "unreachable" in message
    assert "Unknown host" in message


def test_other_maven_failure_is_reported_verbatim() -> None:
    """A non-network Maven failure quotes Maven's first error line."""
    assert "Non-parseable POM" in _explain_mvn_failure("[ERROR] Non-parseable POM /x/pom.xml")


def test_java_major_versions() -> None:
    """Both version styles parse: '17.0.15' and '1.8.0_392'."""
    assert _java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert _java_major('java version "1.8.0_392"') == 8
    assert _java_major("garbage") is None


def test_oplog_bound_becomes_launcher_properties() -> None:
    """A bound and an implementation reach the launcher as -Dsm.oplog.* options."""
    assert mongo_system_properties(None) == ["-Dsm.oplog.impl=bounded"]
    assert mongo_system_properties(20, "library") == [
        "-Dsm.oplog.impl=library",
        "-Dsm.oplog.maxEntries=20",
    ]


def test_invalid_oplog_options_are_refused_with_the_fix() -> None:
    """A bound below 1 or an unknown implementation is an InfraError saying what to give."""
    with pytest.raises(InfraError, match="positive number of entries"):
        mongo_system_properties(0)
    with pytest.raises(InfraError, match="choose 'bounded' or 'library'"):
        mongo_system_properties(None, "capped")


def test_unknown_server_name_is_refused(tmp_path: Path) -> None:
    """up(only=...) names the servers it knows when asked for another."""
    with pytest.raises(InfraError, match="choose kafka and/or mongo"):
        LocalStack(tmp_path).up(only=frozenset({"zookeeper"}))
