"""A throwaway Prometheus server on loopback, for tests and the dashboard rendering.

Runs the ``prometheus`` binary (Debian's package; ``make ops-tools``) with a
generated config that scrapes the given targets every second and evaluates the
project's alert rules with their ``for:`` shortened, and answers PromQL over
its HTTP API.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from stream_migrator.errors import InfraError

#: The alert rules in a source checkout (not part of an installed package).
RULES = Path(__file__).resolve().parents[2] / "deploy/prometheus/rules/stream-migrator.rules.yml"


def free_port() -> int:
    """A free TCP port on loopback (for /metrics of a process we are about to start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPrometheus:
    """``with LocalPrometheus(dir, {"job": ["127.0.0.1:9400"]}) as prom: prom.query("up")``."""

    def __init__(
        self,
        workdir: Path,
        jobs: dict[str, list[str]],
        *,
        rules: Path | None = None,
        rule_for: str = "2s",
        interval: str = "1s",
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise InfraError(
                "prometheus is not installed: run `make ops-tools` (Debian package prometheus)"
            )
        self._binary = binary
        self._dir = workdir
        self._dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rule_files = []
        if rules is not None:
            # Same rules, shorter `for:` so an alert fires within a test's patience.
            fast = re.sub(r"(?m)^(\s+for:\s*)\S+", rf"\g<1>{rule_for}", rules.read_text())
            (self._dir / "rules.yml").write_text(fast)
            rule_files = [str(self._dir / "rules.yml")]
        scrape = [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ]
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": rule_files,
            "scrape_configs": scrape,
        }
        # JSON is YAML: no YAML library needed to write the config.
        (self._dir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalPrometheus:
        log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                self._binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise InfraError(f"prometheus exited with {code}: see {self._dir}/prometheus.log")
            try:
                # Always our own http://127.0.0.1 URL, never user input.
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise InfraError(f"prometheus not ready in 30 s: see {self._dir}/prometheus.log")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` or raises naming Prometheus's error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - own loopback URL
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise InfraError(f"prometheus {path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """Instant query: (labels, value) per series."""
        data = self.api("query", query=expr)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Range query: (labels, [(time, value), ...]) per series."""
        data = self.api("query_range", query=expr, start=str(start), end=str(end), step=str(step))
        return [
            (r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]
        ]

    def firing(self, alertname: str) -> list[dict[str, str]]:
        """Labels of every firing alert of that name."""
        alerts = self.api("alerts")["alerts"]
        return [
            a["labels"]
            for a in alerts
            if a["labels"].get("alertname") == alertname and a["state"] == "firing"
        ]
