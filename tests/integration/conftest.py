"""Fixtures of the integration tests beyond the session's servers (tests/conftest.py)."""

from tests.integration.rollout_plans import forward_migrated
from tests.integration.secured import secure_kafka, tls_mongo

__all__ = ["forward_migrated", "secure_kafka", "tls_mongo"]
