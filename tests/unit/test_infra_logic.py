"""Local-stack helpers that need no server: error wording, Java version parsing."""

from __future__ import annotations

from stream_migrator.infra.jars import _explain_mvn_failure, _java_major


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
