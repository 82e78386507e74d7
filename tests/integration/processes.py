"""Real `stream-migrator` child processes for tests: start, log, health, metrics, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import REPO


class Proc:
    """One `stream-migrator` child process, its combined stdout/stderr in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as fh:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "stream_migrator", *args],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_running(self) -> None:
        code = self.popen.poll()
        assert code is None, f"exited with {code}:\n{self.text()[-4000:]}"

    def terminate(self, timeout: float = 45) -> int:
        """SIGTERM, then the exit code (fails if it does not exit within ``timeout``)."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"no exit within {timeout}s of SIGTERM:\n{self.text()[-4000:]}"
            ) from None

    def events(self) -> list[dict[str, Any]]:
        """The structured JSON log lines (librdkafka's own lines are not JSON)."""
        return [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30, *, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.assert_running()
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{proc.text()[-4000:]}")


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def health(port: int, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    status, body = http_get(port, path)
    return status, (json.loads(body) if status else {})


def metric(port: int, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` with ``labels`` on /metrics (None if none)."""
    status, body = http_get(port, "/metrics")
    if status != 200:
        return None
    found = [
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(found) if found else None
