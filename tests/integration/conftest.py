"""Fixtures of the integration tests beyond the session's servers (tests/conftest.py)."""

from tests.integration.secured import secure_kafka, tls_mongo

__all__ = ["secure_kafka", "tls_mongo"]
