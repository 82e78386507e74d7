"""MongoDB over TLS: the pipeline and reconcile through a real TLS terminator (stunnel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from stream_migrator.demo.data import seed
from stream_migrator.infra.certs import openssl_pem
from stream_migrator.settings import Settings
from tests.integration.helpers import cli, pipeline, settings_env, wait_until_match
from tests.integration.secured import TlsMongo


def test_pipeline_and_reconcile_work_through_tls(
    tls_mongo: TlsMongo, settings_kwargs: dict[str, Any], mongo_uri: str
) -> None:
    """Capture, transform and the `reconcile` CLI all reach MongoDB only through TLS."""
    import random

    settings = Settings(**{**settings_kwargs, "mongo_uri": tls_mongo.uri()})
    direct: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    db, coll = settings.split_ns(settings.source)
    seed(direct[db][coll], 300, 0, random.Random(7))
    with pipeline(settings) as stages:
        wait_until_match(settings, stages=stages)
    done = cli("reconcile", settings.migration, "--json", env=settings_env(settings))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["verdict"]["ready"] is True
    assert report["source_count"] == 300
    direct.close()


@pytest.mark.parametrize("fault", ["untrusted CA", "TLS to a plaintext port"])
def test_tls_misconfiguration_stops_before_touching_data(
    fault: str,
    tls_mongo: TlsMongo,
    settings_kwargs: dict[str, Any],
    mongo_uri: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """A wrong CA, or tls=true at a plaintext server: exit 2, one sentence, nothing written."""
    if fault == "untrusted CA":
        uri = tls_mongo.uri(openssl_pem(tmp_path / "other-ca").ca_pem)
        needle = "is not signed by a CA in tlsCAFile="
    else:
        uri = mongo_uri.replace("?", f"?tls=true&tlsCAFile={tls_mongo.ca_file}&", 1)
        needle = "does the server accept TLS on that port?"
    settings = Settings(**{**settings_kwargs, "mongo_uri": uri})
    done = cli("capture", env=settings_env(settings), timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    direct: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    assert settings.metadata_db not in direct.list_database_names()
    direct.close()
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert settings.changes_topic not in topics
