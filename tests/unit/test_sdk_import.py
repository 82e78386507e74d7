"""The application SDK stays light: importing the router loads no pipeline machinery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import json, sys
import stream_migrator.router
print(json.dumps(sorted(sys.modules)))
"""

_HEAVY = {
    "confluent_kafka",
    "fastavro",
    "yaml",
    "pydantic",
    "prometheus_client",
    "stream_migrator.rollout.controller",
    "stream_migrator.settings",
    "stream_migrator.spec",
    "stream_migrator.kafka",
    "stream_migrator.observability.health",
}


def test_router_import_loads_only_events_mongo_and_errors() -> None:
    """``import stream_migrator.router`` in a fresh interpreter pulls in none of the heavy parts."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert "stream_migrator.rollout.router" in loaded
    assert sorted(_HEAVY & loaded) == []


def test_package_re_exports_still_resolve() -> None:
    """The lazy re-exports give the same objects as their modules."""
    import stream_migrator
    from stream_migrator import rollout
    from stream_migrator.rollout.controller import Controller
    from stream_migrator.settings import load_settings

    assert stream_migrator.load_settings is load_settings
    assert rollout.Controller is Controller
    for name in rollout.__all__:
        assert getattr(rollout, name) is not None
    for name in stream_migrator.__all__:
        assert getattr(stream_migrator, name) is not None
    with pytest.raises(AttributeError, match=r"'stream_migrator\.rollout' has no attribute 'Nope'"):
        _ = rollout.Nope
