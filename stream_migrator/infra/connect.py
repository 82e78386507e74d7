"""A local Kafka Connect worker (standalone mode) with the official MongoDB connector.

Standalone mode rather than distributed: it needs no internal config/offset/status
topics and no group join, so it is ready about 5 s after launch on 2 cores, and its
REST API deploys connectors exactly as a distributed cluster's does. Source offsets
(the connector's resume tokens) live in ``<state_dir>/connect.offsets``.

The worker runs as a detached child process (own process group) from a flat jar
directory resolved from ``deploy/local/connect/pom.xml``; connectors come from the
JSON files in ``connectors/`` rendered with :func:`render_connector`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import string
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from stream_migrator.errors import InfraError
from stream_migrator.infra.jars import DEPLOY_LOCAL, java_binary, resolve_jars
from stream_migrator.infra.probes import free_port
from stream_migrator.infra.stack import DEFAULT_CACHE_DIR, REPO_ROOT

CONNECT_DIR = DEPLOY_LOCAL / "connect"
CONNECT_POM = CONNECT_DIR / "pom.xml"
CONNECTORS_DIR = REPO_ROOT / "connectors"
SINK_CONNECTOR = "com.mongodb.kafka.connect.MongoSinkConnector"
SOURCE_CONNECTOR = "com.mongodb.kafka.connect.MongoSourceConnector"
# Same start-up flags as the broker: C1 only halves JVM warm-up on 2 cores.
_CONNECT_JVM = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    f"-Dlog4j2.configurationFile={CONNECT_DIR / 'log4j2.yaml'}",
]


def connect_jars(cache_dir: Path | None = None, *, quiet: bool = False) -> Path:
    """The flat jar directory of connect-runtime, connect-json and mongo-kafka-connect."""
    return resolve_jars(
        (cache_dir or DEFAULT_CACHE_DIR).resolve(),
        quiet=quiet,
        pom=CONNECT_POM,
        what="Kafka Connect and MongoDB connector",
    )


def render_connector(name: str, **values: Any) -> dict[str, Any]:
    """Load ``connectors/<name>.json`` and fill in its ``${VARS}``.

    Values are substituted as JSON string content (quotes and backslashes escaped),
    so a URI or a pipeline with quotes cannot break the file. A missing variable is
    an error naming it rather than a connector deployed with a literal ``${...}``.
    """
    path = CONNECTORS_DIR / f"{name}.json"
    text = path.read_text()
    escaped = {k: json.dumps(str(v))[1:-1] for k, v in values.items()}
    try:
        rendered = string.Template(text).substitute(escaped)
    except KeyError as exc:
        raise InfraError(f"{path} needs a value for ${{{exc.args[0]}}}") from None
    data: dict[str, Any] = json.loads(rendered)
    return data


class ConnectWorker:
    """Start, use and stop one standalone Kafka Connect worker on a free loopback port."""

    def __init__(
        self,
        bootstrap: str,
        state_dir: Path,
        *,
        cache_dir: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.bootstrap = bootstrap
        self.state_dir = state_dir.resolve()
        self.cache_dir = cache_dir
        self.host = host
        self.port = 0
        self.log_path = self.state_dir / "connect.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------
    def start(self, *, timeout: float = 90.0, quiet: bool = True) -> str:
        """Launch the worker and wait until its REST API lists the MongoDB connectors."""
        java = java_binary()
        jars = connect_jars(self.cache_dir, quiet=quiet)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        props = self.state_dir / "connect-standalone.properties"
        template = (CONNECT_DIR / "connect-standalone.properties.template").read_text()
        props.write_text(
            string.Template(template).substitute(
                BOOTSTRAP=self.bootstrap,
                HOST=self.host,
                REST_PORT=self.port,
                OFFSETS_FILE=self.state_dir / "connect.offsets",
            )
        )
        argv = [
            java,
            *_CONNECT_JVM,
            "-cp",
            f"{jars}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(props),
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                start_new_session=True,  # own process group: stop() signals the whole JVM
            )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (tasks stop and flush offsets), then SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def __enter__(self) -> ConnectWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise InfraError(
                    f"the Kafka Connect worker exited during start; last log lines "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            # GET / answers 404 until the REST resources are registered, so ask for
            # the plugins: that also proves the MongoDB connector jar was found.
            plugins: set[str] | None = None
            with contextlib.suppress(OSError, InfraError, ValueError):
                plugins = {p["class"] for p in self.request("GET", "/connector-plugins")}
            if plugins is not None:
                if {SINK_CONNECTOR, SOURCE_CONNECTOR} <= plugins:
                    return
                raise InfraError(
                    f"Kafka Connect at {self.url} does not list the MongoDB connectors "
                    f"(found {sorted(plugins)}); is mongo-kafka-connect in the jar directory?"
                )
            time.sleep(0.25)
        raise InfraError(f"Kafka Connect did not answer on {self.url} in time; see {self.log_path}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the worker's log (where task stack traces go)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- REST -------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """One REST call; returns the decoded JSON (None for an empty body).

        An HTTP error raises InfraError carrying Connect's own message (for an
        invalid connector config it lists every bad setting).
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - fixed http://loopback URL we built
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("message", detail)
            raise InfraError(f"Kafka Connect {method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw else None

    def deploy(self, connector: dict[str, Any]) -> None:
        """Create or update a connector from ``{"name": ..., "config": {...}}``.

        PUT /connectors/<name>/config is idempotent, unlike POST /connectors.
        """
        name = connector["name"]
        self.request("PUT", f"/connectors/{name}/config", {**connector["config"], "name": name})

    def delete(self, name: str) -> None:
        """Remove a connector (its tasks stop); a missing one is not an error."""
        try:
            self.request("DELETE", f"/connectors/{name}")
        except InfraError as exc:
            if "HTTP 404" not in str(exc):
                raise

    def status(self, name: str) -> dict[str, Any]:
        """GET /connectors/<name>/status: connector and task states (with traces on failure)."""
        result: dict[str, Any] = self.request("GET", f"/connectors/{name}/status")
        return result

    def wait_running(self, name: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the connector and all its tasks are RUNNING; a FAILED one raises at once."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status(name)
            except InfraError:  # 404 for a moment right after deploy
                time.sleep(0.25)
                continue
            states = [last["connector"], *last.get("tasks", [])]
            failed = [s for s in states if s.get("state") == "FAILED"]
            if failed:
                trace = str(failed[0].get("trace", ""))[:2000]
                raise ConnectorFailedError(f"connector {name!r} FAILED: {trace}")
            if last.get("tasks") and all(s.get("state") == "RUNNING" for s in states):
                return last
            time.sleep(0.25)
        raise InfraError(f"connector {name!r} not RUNNING after {timeout:.0f}s: {last}")


class ConnectorFailedError(InfraError):
    """A connector or one of its tasks is in state FAILED; the message carries its trace."""
