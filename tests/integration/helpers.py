"""Helpers for integration tests: run pipeline stages in threads or processes, wait for truth."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pymongo import MongoClient

from stream_migrator.app import run_capture, run_transform
from stream_migrator.reconcile import CompareReport, full_compare
from stream_migrator.runtime import StopFlag
from stream_migrator.settings import Settings
from stream_migrator.spec import get_spec

REPO = Path(__file__).resolve().parents[2]


class StageThread(threading.Thread):
    """Runs capture or transform in-process until stopped; re-raises its error on join."""

    def __init__(self, target: Callable[[Settings, StopFlag], Any], settings: Settings) -> None:
        super().__init__(daemon=True, name=target.__name__)
        self.stop_flag = StopFlag()
        self._fn = target
        self._settings = settings
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn(self._settings, self.stop_flag)
        except BaseException as exc:  # noqa: BLE001 - surfaced in stop()
            self.error = exc

    def stop(self, timeout: float = 60) -> Any:
        self.stop_flag.set("test")
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not stop within {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


@contextlib.contextmanager
def pipeline(settings: Settings, *, capture: bool = True) -> Iterator[dict[str, StageThread]]:
    stages: dict[str, StageThread] = {}
    if capture:
        stages["capture"] = StageThread(run_capture, settings)
    stages["transform"] = StageThread(run_transform, settings)
    for stage in stages.values():
        stage.start()
    try:
        yield stages
    finally:
        for stage in stages.values():
            stage.stop()


def client_for(settings: Settings) -> MongoClient[dict[str, Any]]:
    return MongoClient(settings.mongo_uri.get_secret_value(), tz_aware=True)


def wait_until_match(
    settings: Settings, timeout: float = 90, *, stages: dict[str, StageThread] | None = None
) -> CompareReport:
    """Poll a full compare until source and target agree; fail with the last report."""
    client = client_for(settings)
    sdb, scoll = settings.split_ns(settings.source)
    tdb, tcoll = settings.split_ns(settings.target)
    deadline = time.monotonic() + timeout
    report = CompareReport()
    try:
        while time.monotonic() < deadline:
            for stage in (stages or {}).values():
                if stage.error is not None:
                    raise stage.error
            report = full_compare(client[sdb][scoll], client[tdb][tcoll], get_spec(settings.spec))
            if report.mismatches == 0:
                return report
            time.sleep(0.5)
    finally:
        client.close()
    raise AssertionError(f"target did not converge in {timeout}s: {report}")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point."""
    return subprocess.run(
        [sys.executable, "-m", "stream_migrator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The SM_* environment that reproduces ``settings`` in a child process."""
    env = {}
    for name, value in settings.model_dump().items():
        secret = isinstance(value, SecretStr)
        env[f"SM_{name.upper()}"] = value.get_secret_value() if secret else str(value)
    return env
